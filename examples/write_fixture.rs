//! Write a tiny fixture family to a folder: `cargo run --example write_fixture -- DIR [llama|mistral|qwen2|identity]`.
//! `identity` writes the identity family (base, task, distractor) with its two tasks as
//! multiple-choice JSONL files and prints the `--base`, `--finetunes` and `--tasks` arguments.
fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "fixture-family".into()));
    let kind = args.next();
    if kind.as_deref() == Some("identity") {
        return write_identity(&dir);
    }
    let spec = match kind.as_deref() {
        Some("mistral") => hf_tailor::testkit::fixture::TinySpec::mistral(),
        Some("qwen2") => hf_tailor::testkit::fixture::TinySpec::qwen2(),
        _ => hf_tailor::testkit::fixture::TinySpec::llama(),
    };
    hf_tailor::testkit::fixture::write_family(&dir, &spec, 2, 1)?;
    println!("wrote {}", dir.display());
    Ok(())
}

fn write_identity(dir: &std::path::Path) -> std::io::Result<()> {
    use hf_tailor::testkit::identity_family::IdentityFamily;
    std::fs::create_dir_all(dir)?;
    let fam = IdentityFamily::write(dir)?;
    let family = std::sync::Arc::new(fam.open().map_err(std::io::Error::other)?);
    let tasks = fam.tasks(family, 24).map_err(std::io::Error::other)?;
    let mut specs = Vec::new();
    for t in &tasks {
        let hf_tailor::eval::TaskData::MultipleChoice(items) = &t.data else { continue };
        let lines: Vec<String> =
            items.iter().map(|i| serde_json::json!({"context": i.context, "choices": i.choices, "label": i.label}).to_string()).collect();
        let p = dir.join(format!("{}.jsonl", t.name));
        std::fs::write(&p, lines.join("\n") + "\n")?;
        specs.push(format!("mc:{}={}", t.name, p.display()));
    }
    println!(
        "--base {} --finetunes {},{} --keep-layers 4 --tasks {}",
        fam.dirs[0].display(),
        fam.dirs[1].display(),
        fam.dirs[2].display(),
        specs.join(",")
    );
    Ok(())
}
