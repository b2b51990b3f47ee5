//! `hf-tailor gguf`: write GGUF files (llama.cpp, Ollama, LM Studio) beside a model's safetensors.

use std::path::PathBuf;

use hf_tailor::gguf::{self, FileType, GgufOptions};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  hf-tailor gguf --model tailored/model --type f16,q8_0\n  llama-cli -m tailored/model/model-Q8_0.gguf -p \"The capital of France is\" -n 20\n\nFiles are named after the folder (FOLDER-F16.gguf, FOLDER-Q8_0.gguf) and written into it,\nso `hf-tailor push` uploads them and `hf-tailor card` links them."
)]
pub struct Args {
    /// The model folder (config.json, safetensors, tokenizer.json); the files are written into it.
    #[arg(long)]
    pub model: PathBuf,
    /// GGUF types, comma-separated: f16, q8_0, bf16, f32.
    #[arg(long = "type", value_name = "TYPES", default_value = "f16", value_parser = parse_types)]
    pub types: TypeList,
    /// Replace GGUF files of the same names.
    #[arg(long)]
    pub force: bool,
    /// Model name in the file names and the GGUF's `general.name` (default: the folder's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

/// GGUF types given as one comma-separated value (`--type f16,q8_0`, `--gguf f16,q8_0`).
#[derive(Debug, Clone)]
pub struct TypeList(pub Vec<FileType>);

/// `--gguf` / `--type`: a comma-separated list of GGUF types.
pub fn parse_types(s: &str) -> Result<TypeList, String> {
    FileType::parse_list(s).map(TypeList).map_err(|e| e.to_string())
}

/// Write the GGUF files of `types` into a freshly built model folder and say so on stderr.
pub fn write_after_build(model: &std::path::Path, types: &TypeList, force: bool, json: bool) -> anyhow::Result<Vec<gguf::GgufFile>> {
    let files = gguf::write_beside(model, &GgufOptions { types: types.0.clone(), force, name: None })?;
    if !json {
        for f in &files {
            eprintln!("hf-tailor: wrote {} ({}, {:.1} MB)", f.path, f.file_type.label(), f.bytes as f64 / 1e6);
        }
    }
    Ok(files)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let files = gguf::write_beside(&args.model, &GgufOptions { types: args.types.0, force: args.force, name: args.name })?;
    report(&files, args.json)
}

/// Print the written files (one line each, or JSON).
pub fn report(files: &[gguf::GgufFile], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(files)?);
    } else {
        for f in files {
            println!("wrote {}: {}, {} tensors, {:.1} MB in {:.1} s", f.path, f.file_type.label(), f.tensors, f.bytes as f64 / 1e6, f.seconds);
        }
    }
    Ok(())
}
