//! Write a tiny fixture family to a folder: `cargo run --example write_fixture -- DIR [llama|mistral|qwen2|identity]`.
//! `identity` writes the identity family (base, task, distractor) with its two tasks as
//! multiple-choice JSONL files (and held-out items of the same tasks under `heldout/`) and prints the `--base`, `--finetunes` and `--tasks` arguments.
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
    let tasks = fam.tasks(family.clone(), 24).map_err(std::io::Error::other)?;
    // Held-out items (`heldout/NAME.jsonl`, up to 48 a task) the search tasks do not contain,
    // for scoring a search's result on items it never saw (scripts/bench-front.sh).
    let more = fam.tasks(family, 120).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir.join("heldout"))?;
    let mut specs = Vec::new();
    for (t, m) in tasks.iter().zip(&more) {
        let (hf_tailor::eval::TaskData::MultipleChoice(items), hf_tailor::eval::TaskData::MultipleChoice(all)) = (&t.data, &m.data) else { continue };
        let held: Vec<&hf_tailor::eval::McItem> = all.iter().filter(|i| !items.iter().any(|s| s.context == i.context)).take(48).collect();
        let line = |i: &hf_tailor::eval::McItem| serde_json::json!({"context": i.context, "choices": i.choices, "label": i.label}).to_string();
        let p = dir.join(format!("{}.jsonl", t.name));
        std::fs::write(&p, items.iter().map(line).collect::<Vec<_>>().join("\n") + "\n")?;
        std::fs::write(dir.join("heldout").join(format!("{}.jsonl", t.name)), held.into_iter().map(line).collect::<Vec<_>>().join("\n") + "\n")?;
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
