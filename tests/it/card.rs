//! The model card: metadata parsed by huggingface_hub's `ModelCard`, the lineage table and
//! picture, the summary figures.

use std::collections::BTreeMap;

use hf_tailor::card::{self, CardInput, License};
use hf_tailor::config::ModelConfig;
use hf_tailor::eval::{TaskAbout, TaskFormat};
use hf_tailor::recipe::{EdgePolicy, LayerRule, Merge, Recipe, Rule, SourceModel};
use hf_tailor::score::{ModelResult, ResultKind};
use hf_tailor::testkit::fixture::{self, TinySpec};

use crate::common;

fn source(name: &str, repo: &str, rev: Option<&str>) -> SourceModel {
    SourceModel::hub(name, repo, rev)
}

/// 4 source layers → 3: layer 0 from the base, layer 1 from sib1, layer 2 removed, layer 3
/// a task-arithmetic merge of both siblings.
fn recipe() -> Recipe {
    let sha = |c: char| c.to_string().repeat(40);
    Recipe::new(
        "llama",
        4,
        source("base", "meta-llama/Llama-2-13b-hf", Some(&sha('a'))),
        vec![source("wizard", "WizardLMTeam/WizardLM-13B-V1.2", Some(&sha('b'))), source("vicuna", "lmsys/vicuna-13b-v1.5", Some(&sha('c')))],
        vec![
            LayerRule { from: 0, rule: Rule::Take("base".into()) },
            LayerRule { from: 1, rule: Rule::Take("wizard".into()) },
            LayerRule { from: 3, rule: Rule::Merge(Merge::TaskArithmetic { models: vec!["wizard".into(), "vicuna".into()], lambda: 0.6 }) },
        ],
        EdgePolicy::Base,
    )
}

fn result(label: &str, kind: ResultKind, layers: usize, mmlu: f64, wsc: f64) -> ModelResult {
    ModelResult {
        label: label.into(),
        kind,
        layers,
        params: 1000 * layers as u64,
        scores: BTreeMap::from([("mmlu".into(), mmlu), ("wsc".into(), wsc)]),
        se: BTreeMap::from([("mmlu".into(), 0.02), ("wsc".into(), 0.03)]),
        acc_norm: BTreeMap::new(),
        acc_norm_se: BTreeMap::new(),
        items: BTreeMap::from([("mmlu".into(), 600), ("wsc".into(), 250)]),
    }
}

fn input(dir: &std::path::Path) -> CardInput {
    let spec = TinySpec::llama();
    fixture::write_model(&dir.join("base"), &spec, &fixture::random_weights(&spec, 1)).unwrap();
    let config = ModelConfig::from_file(&dir.join("base/config.json")).unwrap();
    let mut input = CardInput::new(recipe(), "me/llama-tailored", config.total_params(4), config.total_params(3));
    input.repo_id = Some("me/llama-tailored".into());
    input.license = card::license_from_readme("---\nlicense: llama2\n---\n# Llama 2\n");
    input.results = vec![
        result("base", ResultKind::Base, 4, 0.50, 0.60),
        result("wizard", ResultKind::Sibling, 4, 0.55, 0.58),
        result("ShortGPT", ResultKind::Baseline, 3, 0.40, 0.52),
        result("hf-tailor", ResultKind::Tailored, 3, 0.52, 0.61),
    ];
    input.mergekit_yaml = Some("merge_method: passthrough\nslices: []\n".into());
    input.results_held_out = true;
    input.tasks = vec![
        ("mmlu".into(), TaskAbout::of(Some(TaskFormat::Mmlu), std::path::Path::new("mmlu"))),
        ("wsc".into(), TaskAbout::of(Some(TaskFormat::Wsc), std::path::Path::new("wsc.parquet"))),
    ];
    input
}

#[test]
fn card_metadata_parses_with_huggingface_hub() {
    let tmp = common::tempdir();
    let input = input(tmp.path());
    let out = tmp.path().join("model");
    std::fs::create_dir_all(&out).unwrap();
    card::write(&out, &input).unwrap();
    let json = common::run_python("card_meta.py", &[out.join("README.md").to_str().unwrap(), out.join("lineage.svg").to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let data = &v["data"];
    assert_eq!(data["base_model"], serde_json::json!(["meta-llama/Llama-2-13b-hf", "WizardLMTeam/WizardLM-13B-V1.2", "lmsys/vicuna-13b-v1.5"]));
    assert_eq!(data["base_model_relation"], "merge");
    assert_eq!(data["library_name"], "transformers");
    assert_eq!(data["pipeline_tag"], "text-generation");
    assert_eq!(data["license"], "llama2");
    for tag in ["merge", "pruned", "hf-tailor"] {
        assert!(data["tags"].as_array().unwrap().iter().any(|t| t == tag), "tag {tag}: {}", data["tags"]);
    }
    // model-index: the tailored model's scores, one result per task.
    assert_eq!(v["model_name"], "me/llama-tailored");
    let evals = v["eval_results"].as_array().unwrap();
    assert_eq!(evals.len(), 2, "{evals:?}");
    // The Hub dataset each task's items come from, its config and split, and the few-shot count.
    let mmlu = evals.iter().find(|e| e["dataset_type"] == "cais/mmlu").unwrap();
    assert_eq!(mmlu["metric_value"], 0.52);
    assert_eq!(mmlu["task_type"], "text-generation");
    assert_eq!((mmlu["dataset_config"].as_str(), mmlu["dataset_split"].as_str()), (Some("all"), Some("validation")), "{mmlu}");
    assert_eq!(mmlu["dataset_args"]["num_few_shot"], 0, "{mmlu}");
    assert!(mmlu["metric_name"].as_str().unwrap().starts_with("accuracy on held-out items (± 2.0 points s.e., 600 items"), "{mmlu}");
    let wsc = evals.iter().find(|e| e["dataset_type"] == "aps/super_glue").unwrap();
    assert_eq!((wsc["dataset_config"].as_str(), wsc["dataset_split"].as_str()), (Some("wsc.fixed"), Some("train")), "{wsc}");
    assert!(wsc["dataset_name"].as_str().unwrap().contains("GPTailor A/B prompt"), "{wsc}");
    // The picture is valid SVG: 3 tailored layers (4 stripes: the merge has 2) + 3 legend
    // models + the removed swatch + 4 source and 3 tailored outlines + the background.
    assert_eq!(v["svg_tag"], "{http://www.w3.org/2000/svg}svg");
    assert_eq!(v["svg_rects"], 1 + 4 + 3 + 1 + 4 + 3, "{}", v["svg_rects"]);
    assert_eq!(v["svg_title"], "Layer lineage of me/llama-tailored");
}

#[test]
fn card_body_shows_summary_lineage_results_and_recipe() {
    let tmp = common::tempdir();
    let input = input(tmp.path());
    let card = card::render(&input).unwrap();
    let md = &card.readme;
    let config = ModelConfig::from_file(&tmp.path().join("base/config.json")).unwrap();
    let (before, after) = (config.total_params(4), config.total_params(3));
    assert!(md.contains("| Decoder layers | 4 | 3 | 1 (25.0 %) |"), "{md}");
    assert!(md.contains(&format!("| Parameters | {} | {} |", card::human_count(before), card::human_count(after))), "{md}");
    // Lineage rows: output → source model@revision, source layer, rule, λ.
    assert!(md.contains("| 0 | [meta-llama/Llama-2-13b-hf@aaaaaaaa](https://huggingface.co/meta-llama/Llama-2-13b-hf/tree/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa) | 0 | take |  |"), "{md}");
    assert!(md.contains("| 1 | [WizardLMTeam/WizardLM-13B-V1.2@bbbbbbbb]"), "{md}");
    let merge_row = md.lines().find(|l| l.starts_with("| 2 |")).unwrap();
    assert!(
        merge_row.contains("WizardLM-13B-V1.2@bbbbbbbb") && merge_row.contains("vicuna-13b-v1.5@cccccccc") && merge_row.contains("on base"),
        "{merge_row}"
    );
    assert!(merge_row.ends_with("| 3 | task_arithmetic | 0.6 |"), "{merge_row}");
    assert!(md.contains("Removed source layers: 2."), "{md}");
    assert!(md.contains("![Layer lineage"), "{md}");
    assert!(md.contains("(lineage.svg)"), "{md}");
    // Evaluation table: every row, tailored in bold, percentages.
    assert!(md.contains("| Model | Kind | Layers | Parameters | mmlu | wsc | Mean |"), "{md}");
    assert!(md.contains("| **hf-tailor** | tailored | 3 | 3.0K | 52.0 ± 2.0 | 61.0 ± 3.0 | **56.5 ± 1.8** |"), "{md}");
    assert!(md.contains("| ShortGPT | baseline | 3 | 3.0K | 40.0 ± 2.0 | 52.0 ± 3.0 | 46.0 ± 1.8 |"), "{md}");
    assert!(md.contains("none of which the search or the final choice saw"), "{md}");
    // Differences under two standard errors are not called differences: 56.5 vs 55.0 (base)
    // is +1.5 ± 2.5; vs ShortGPT +10.5 ± 2.5 is.
    assert!(md.contains("hf-tailor vs base: +1.5 ± 2.5 points (within two standard errors: not a measurable difference)"), "{md}");
    assert!(md.contains("hf-tailor vs ShortGPT: +10.5 ± 2.5 points (higher, by at least two standard errors)"), "{md}");
    // Task names say what they are.
    assert!(md.contains("**`mmlu`**: four-choice questions on 57 subjects"), "{md}");
    assert!(md.contains("600 items; Hub dataset `cais/mmlu`, config `all`, split `validation`, 0-shot."), "{md}");
    // Which numbers are held out is said where the table is, and for the metadata too.
    assert!(
        md.contains("on **held-out items**") && md.contains("(`model-index`, which the Hub's evaluation widget shows) is on the held-out items"),
        "{md}"
    );
    assert!(md.contains("not lm-evaluation-harness's `wsc` task"), "{md}");
    // Usage and reproduction.
    assert!(md.contains("AutoModelForCausalLM.from_pretrained(\"me/llama-tailored\""), "{md}");
    assert!(md.contains("convert_hf_to_gguf.py llama-tailored"), "{md}");
    // Hub sources pinned by revision: anyone can rebuild it.
    assert!(md.contains("anyone can\nrebuild this model") && !md.contains("local folders"), "{md}");
    assert!(md.contains(&input.recipe.to_yaml()), "recipe YAML missing");
    assert!(md.contains("merge_method: passthrough\nslices: []\n```"), "{md}");
    // The recipe block is itself a loadable recipe.
    let start = md.find("```yaml\n").unwrap() + 8;
    let end = start + md[start..].find("```").unwrap();
    assert_eq!(Recipe::from_yaml_str(&md[start..end], "card").unwrap(), input.recipe);
}

#[test]
fn calibration_scores_are_labelled_as_optimised_and_stay_out_of_the_model_index() {
    let tmp = common::tempdir();
    let mut input = input(tmp.path());
    input.results_held_out = false;
    let md = card::render(&input).unwrap().readme;
    assert!(!md.contains("model-index"), "{md}");
    assert!(md.contains("on the calibration items the search optimised") && md.contains("optimistic"), "{md}");
}

#[test]
fn card_without_results_or_license_says_so() {
    let tmp = common::tempdir();
    let mut input = input(tmp.path());
    input.results.clear();
    input.license = None;
    input.mergekit_yaml = None;
    let md = card::render(&input).unwrap().readme;
    assert!(md.contains("No evaluation results were recorded"), "{md}");
    assert!(!md.contains("license:"), "{md}");
    assert!(!md.contains("model-index"), "{md}");
    assert!(!md.contains("mergekit-yaml"), "{md}");
    assert_eq!(License::default().id, "");
}

#[test]
fn card_cli_writes_readme_and_svg() {
    let tmp = common::tempdir();
    let input = input(tmp.path());
    // A written model of the recipe's depth: its tensors are what the card counts.
    let model = tmp.path().join("model");
    let spec = TinySpec { layers: input.recipe.layers.len(), ..TinySpec::llama() };
    fixture::write_model(&model, &spec, &fixture::random_weights(&spec, 2)).unwrap();
    input.recipe.save(&tmp.path().join("tailor.yaml")).unwrap();
    std::fs::write(tmp.path().join("results.json"), serde_json::to_string(&serde_json::json!({"results": input.results})).unwrap()).unwrap();
    std::fs::write(tmp.path().join("BASE.md"), "---\nlicense: apache-2.0\n---\n").unwrap();
    let out = common::hf_tailor()
        .args(["card", "--model"])
        .arg(&model)
        .arg("--recipe")
        .arg(tmp.path().join("tailor.yaml"))
        .arg("--results")
        .arg(tmp.path().join("results.json"))
        .arg("--base-readme")
        .arg(tmp.path().join("BASE.md"))
        .args(["--repo", "me/x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(model.join("README.md")).unwrap();
    assert!(md.contains("license: apache-2.0") && md.contains("# me/x") && md.contains("**hf-tailor**"), "{md}");
    assert!(md.contains("merge_method: task_arithmetic") || md.contains("merge_method: passthrough"), "mergekit section: {md}");
    assert!(std::fs::read_to_string(model.join("lineage.svg")).unwrap().starts_with("<svg"));
    let written: u64 = hf_tailor::checkpoint::Checkpoint::open(&model).unwrap().tensors.values().map(|t| t.numel() as u64).sum();
    let base_config = ModelConfig::from_file(&tmp.path().join("base/config.json")).unwrap();
    let row = format!("| Parameters | {} | {} |", card::human_count(base_config.total_params(4)), card::human_count(written));
    assert!(md.contains(&row), "{row} in {md}");
    // Bad input: one line, non-zero exit, nothing written.
    std::fs::write(tmp.path().join("bad.json"), "[{\"label\": 1}]").unwrap();
    let out = common::hf_tailor()
        .args(["card", "--model"])
        .arg(tmp.path().join("nowhere"))
        .arg("--recipe")
        .arg(tmp.path().join("tailor.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!tmp.path().join("nowhere").exists());
}

/// A task read from a file: the card names what it asks only when it knows, but always its
/// chance level and one item; the table has a chance row and the metadata the chance too.
#[test]
fn tasks_say_their_chance_level_and_show_an_item() {
    use hf_tailor::eval::{McItem, TaskData};
    let tmp = common::tempdir();
    let mut input = input(tmp.path());
    let item = |c: &str, label| McItem {
        context: c.into(),
        choices: vec![" yes".into(), " no".into(), " maybe".into(), "`x`".into()],
        label,
        subject: None,
    };
    let data = TaskData::MultipleChoice(vec![item("Is water wet?", 0), item("Is fire cold?", 1)]);
    input.tasks = vec![
        ("mmlu".into(), TaskAbout::local("mmlu.jsonl").with_items(&data)),
        (
            "wsc".into(),
            TaskAbout::local("wsc.jsonl")
                .with_items(&TaskData::MultipleChoice(vec![McItem { choices: vec!["a".into(), "b".into()], ..item("x", 0) }])),
        ),
    ];
    let md = card::render(&input).unwrap().readme;
    assert!(
        md.contains("**`mmlu`**: mmlu.jsonl (local file). 600 items; file `mmlu.jsonl`, 0-shot. 4 choices per item, so guessing scores 25 %."),
        "{md}"
    );
    assert!(md.contains("Example: `Is water wet?` → choices ` yes`, ` no`, ` maybe`, `` `x` ``; correct ` yes`."), "{md}");
    assert!(md.contains("| *chance (random guess)* | | | | 25.0 | 50.0 | 37.5 |"), "{md}");
    assert!(md.contains("chance 25 %") && md.contains("chance 50 %"), "model-index names the chance level: {md}");
    // Without a chat template the snippet prompts with a task's item, as plain text.
    assert!(md.contains("inputs = tokenizer(\"Is water wet?\", return_tensors=\"pt\")"), "{md}");
}

/// A model built from local folders and not pushed: the snippets load the folder, the
/// reproduction says nobody else has the sources; a chat template makes the prompt a
/// conversation.
#[test]
fn a_local_build_loads_its_folder_and_says_it_cannot_be_rebuilt_elsewhere() {
    let tmp = common::tempdir();
    let mut input = input(tmp.path());
    for m in std::iter::once(&mut input.recipe.base).chain(input.recipe.siblings.iter_mut()) {
        m.source = hf_tailor::source::ModelSource::Local(tmp.path().join(&m.name));
    }
    input.repo_id = None;
    input.folder = Some("tailored/model".into());
    input.chat_template = true;
    let md = card::render(&input).unwrap().readme;
    assert!(md.contains("from_pretrained(\"tailored/model\"") && !md.contains("hf download"), "{md}");
    assert!(md.contains("convert_hf_to_gguf.py tailored/model --outfile"), "{md}");
    assert!(md.contains("tokenizer.apply_chat_template(messages, add_generation_prompt=True"), "{md}");
    assert!(md.contains("**The source models are local folders** (`base`, `wizard`, `vicuna`)"), "{md}");
    assert!(!md.contains(&tmp.path().display().to_string()), "no path of this machine: {md}");
    // The chat template is found in the written folder too.
    let out = tmp.path().join("model");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("tokenizer_config.json"), r#"{"chat_template": "{{ messages }}"}"#).unwrap();
    input.chat_template = false;
    let written = card::write(&out, &input).unwrap().readme;
    assert!(written.contains("apply_chat_template"), "{written}");
}
