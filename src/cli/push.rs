//! `hf-tailor push DIR user/name`: upload a model folder to a Hub model repo.

use std::path::PathBuf;

use hf_tailor::hub::{self, HubConfig, PushOptions};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  hf-tailor push ./tailored me/Llama-2-10b-tailored --private\n  hf-tailor push ./tailored me/model --revision dev --message \"re-run with 30 layers\"\n\nThe token comes from HF_TOKEN or the file `hf auth login` writes ($HF_HOME/token, HF_TOKEN_PATH)."
)]
pub struct Args {
    /// Folder to upload (every file in it, recursively; hidden files are skipped).
    pub dir: PathBuf,
    /// Target model repo, `owner/name`; created when missing.
    pub repo: String,
    /// Create the repo as private (an existing repo keeps its visibility).
    #[arg(long)]
    pub private: bool,
    /// Branch to commit to.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Commit message.
    #[arg(long, default_value = "Upload model tailored with hf-tailor")]
    pub message: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = HubConfig::from_env();
    let opts = PushOptions { private: args.private, revision: args.revision, message: args.message, ..PushOptions::default() };
    let report = hub::push_folder(&cfg, &args.dir, &args.repo, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "pushed {} files to {} ({} by LFS: {} uploaded, {} already on the Hub; {} unchanged); commit {}",
            report.files,
            report.url,
            report.lfs_files,
            report.lfs_uploaded,
            report.lfs_already_present,
            report.unchanged,
            report.commit.as_deref().unwrap_or("(none: nothing changed)")
        );
    }
    Ok(())
}
