//! `--tokenizer-source` and `--chat-template`: the written model carries the chosen
//! tokenizer and template (checked by transformers' own `apply_chat_template`), a tokenizer
//! with another vocabulary is refused naming the token, and siblings that disagree warn.

use std::path::Path;

use hf_tailor::recipe::{EdgePolicy, LayerRule, Recipe, Rule, SourceModel};
use hf_tailor::testkit::fixture::{self, TinySpec};
use serde_json::{json, Value};

use crate::common::{hf_tailor, run_python, tempdir};

const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}";

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn write_json(p: &Path, v: &Value) {
    std::fs::write(p, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// Make `dir` a chat model: two added special tokens on padding rows, a chat template in
/// tokenizer_config.json (as transformers 4 saved it) and `<|im_end|>` as its EOS.
fn make_chat_model(dir: &Path, template: &str) {
    let mut t = read_json(&dir.join("tokenizer.json"));
    for (id, content) in [(259, "<|im_start|>"), (260, "<|im_end|>")] {
        t["added_tokens"].as_array_mut().unwrap().push(json!({
            "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true
        }));
    }
    write_json(&dir.join("tokenizer.json"), &t);
    let mut c = read_json(&dir.join("tokenizer_config.json"));
    c["chat_template"] = json!(template);
    c["eos_token"] = json!("<|im_end|>");
    write_json(&dir.join("tokenizer_config.json"), &c);
    write_json(&dir.join("generation_config.json"), &json!({"bos_token_id": 256, "eos_token_id": 260}));
}

/// A base and two siblings with 264 embedding rows (five padding rows past the tokenizer),
/// and a recipe over them written to `root/recipe.yaml`.
fn family(root: &Path) -> std::path::PathBuf {
    let spec = TinySpec { vocab: 264, ..TinySpec::llama() };
    let (base, sibs, _) = fixture::write_family(root, &spec, 2, 7).unwrap();
    let layers = vec![
        LayerRule { from: 0, rule: Rule::Take("base".into()) },
        LayerRule { from: 1, rule: Rule::Take("chat".into()) },
        LayerRule { from: 3, rule: Rule::Take("other".into()) },
    ];
    let recipe = Recipe::new(
        "llama",
        spec.layers,
        SourceModel::local("base", &base),
        vec![SourceModel::local("chat", &sibs[0]), SourceModel::local("other", &sibs[1])],
        layers,
        EdgePolicy::Base,
    );
    make_chat_model(&sibs[0], CHATML);
    let path = root.join("recipe.yaml");
    std::fs::write(&path, recipe.to_yaml()).unwrap();
    path
}

fn build(recipe: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    hf_tailor().args(["build", "--recipe"]).arg(recipe).arg("--out").arg(out).args(extra).output().unwrap()
}

fn render(dir: &Path) -> Value {
    serde_json::from_str(run_python("chat_render.py", &[dir.to_str().unwrap()]).trim()).unwrap()
}

#[test]
fn the_chat_siblings_tokenizer_and_template_reach_the_written_model() {
    let tmp = tempdir();
    let recipe = family(tmp.path());
    let reference = render(&tmp.path().join("sib1"));
    assert!(reference["text"].as_str().unwrap().starts_with("<|im_start|>user\nHi there<|im_end|>"), "{reference}");

    // The chat sibling's tokenizer (its special tokens, EOS and template), copied as is.
    let out = tmp.path().join("out-chat");
    let o = build(&recipe, &out, &["--tokenizer-source", "chat"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(render(&out), reference);
    assert_eq!(read_json(&out.join("generation_config.json"))["eos_token_id"], 260);
    let written = std::fs::read_to_string(out.join("tailor.yaml")).unwrap();
    assert!(written.contains("tokenizer_source: chat"), "{written}");
    let card = hf_tailor::card::render(&hf_tailor::card::CardInput::new(Recipe::load(&out.join("tailor.yaml")).unwrap(), "t", 1, 1)).unwrap();
    assert!(card.readme.contains("The tokenizer and generation config are `chat`'s; the chat template is `chat`'s own"), "{}", card.readme);

    // The base's tokenizer with the template `auto` finds (the only sibling that has one):
    // written as transformers 5 writes it, in chat_template.jinja.
    let out = tmp.path().join("out-base");
    let o = build(&recipe, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(out.join("chat_template.jinja")).unwrap(), CHATML);
    assert!(read_json(&out.join("tokenizer_config.json")).get("chat_template").is_none());
    let rendered = render(&out);
    assert_eq!(rendered["text"], reference["text"]);
    let written = std::fs::read_to_string(out.join("tailor.yaml")).unwrap();
    assert!(written.contains("chat_template:") && written.contains("model: chat"), "{written}");
    let card = hf_tailor::card::render(&hf_tailor::card::CardInput::new(Recipe::load(&out.join("tailor.yaml")).unwrap(), "t", 1, 1)).unwrap();
    assert!(card.readme.contains("are `base`'s; the chat template is `chat`'s."), "{}", card.readme);

    // `--chat-template base`: the base has none, so the output has none.
    let out = tmp.path().join("out-plain");
    let o = build(&recipe, &out, &["--tokenizer-source", "chat", "--chat-template", "base"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.join("chat_template.jinja").exists());
    assert!(read_json(&out.join("tokenizer_config.json")).get("chat_template").is_none());

    // A template file.
    let file = tmp.path().join("mine.jinja");
    std::fs::write(&file, "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}").unwrap();
    let out = tmp.path().join("out-file");
    let o = build(&recipe, &out, &["--chat-template", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(render(&out)["text"], "[user] Hi there\n[assistant] Hello!\n");
}

#[test]
fn a_tokenizer_with_another_vocabulary_is_refused_naming_the_token() {
    let tmp = tempdir();
    let recipe = family(tmp.path());
    // Swap two byte tokens in the other sibling's vocabulary.
    let path = tmp.path().join("sib2/tokenizer.json");
    let mut t = read_json(&path);
    let vocab = t["model"]["vocab"].as_object_mut().unwrap();
    let (a, b) = (vocab["a"].clone(), vocab["b"].clone());
    vocab["a"] = b;
    vocab["b"] = a;
    write_json(&path, &t);
    let out = tmp.path().join("out");
    let o = build(&recipe, &out, &["--tokenizer-source", "other"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("tokenizer source `other`") && err.contains("token id 97 is `b` there but `a` in the base"), "{err}");
    assert!(!out.exists());
}

#[test]
fn siblings_with_different_templates_warn_and_auto_keeps_the_base_template() {
    let tmp = tempdir();
    let recipe = family(tmp.path());
    let mut c = read_json(&tmp.path().join("sib2/tokenizer_config.json"));
    c["chat_template"] = json!("{% for m in messages %}{{ m.content }}{% endfor %}");
    write_json(&tmp.path().join("sib2/tokenizer_config.json"), &c);
    let out = tmp.path().join("out");
    let o = build(&recipe, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning: the siblings' chat templates differ (chat, other)"), "{err}");
    assert!(!out.join("chat_template.jinja").exists());
    assert_eq!(std::fs::read(out.join("tokenizer_config.json")).unwrap(), std::fs::read(tmp.path().join("base/tokenizer_config.json")).unwrap());
}

#[test]
fn the_root_command_takes_the_tokenizer_choice_and_checks_it_before_the_search() {
    let tmp = tempdir();
    family(tmp.path());
    let reference = render(&tmp.path().join("sib1"));
    let task = tmp.path().join("letters.jsonl");
    let items: Vec<String> = (0..16)
        .map(|i| {
            let (a, b) = ((b'a' + i as u8) as char, (b'b' + i as u8) as char);
            json!({"context": format!("{a}{b}{a}{b}"), "choices": [a.to_string(), b.to_string()], "label": 0}).to_string()
        })
        .collect();
    std::fs::write(&task, items.join("\n") + "\n").unwrap();
    let (base, sibs) = (tmp.path().join("base"), format!("{},{}", tmp.path().join("sib1").display(), tmp.path().join("sib2").display()));
    let job = |out: &Path, extra: &[&str]| {
        let mut c = hf_tailor();
        c.arg("--base").arg(&base).args(["--finetunes", &sibs, "--tasks"]).arg(&task);
        c.args(["--keep-layers", "3", "--trials", "2", "--out"]).arg(out).args(extra);
        c.output().unwrap()
    };
    // The chat sibling's tokenizer and template, recorded in the recipe and carried by the model.
    let out = tmp.path().join("job");
    let o = job(&out, &["--tokenizer-source", "sib1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(render(&out.join("model")), reference);
    let recipe = std::fs::read_to_string(out.join("tailor.yaml")).unwrap();
    assert!(recipe.contains("tokenizer_source: sib1"), "{recipe}");
    // A tokenizer source that is not a model of the family: refused before any trial.
    let out = tmp.path().join("job2");
    let o = job(&out, &["--tokenizer-source", "nobody"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.trim().lines().last().unwrap_or("").contains("`nobody` is not a model of the family"), "{err}");
    assert!(!out.join("journal.jsonl").exists(), "the search did not start");
}
