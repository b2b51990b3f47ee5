//! Calibration tasks: multiple-choice items (generic, MMLU 0-shot, WSC) and perplexity
//! texts, loaded from local JSONL or parquet, and the lm-evaluation-harness prompt formats
//! of the built-in tasks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::data::{read_rows, SourcedRow};
use super::EvalError;

/// One multiple-choice question: `context + choices[i]` is the i-th candidate text
/// (continuations are appended exactly as written; the leading space belongs to them).
#[derive(Debug, Clone, PartialEq)]
pub struct McItem {
    pub context: String,
    pub choices: Vec<String>,
    pub label: usize,
    /// Budgets count per subject when items carry one (MMLU).
    pub subject: Option<String>,
}

impl McItem {
    /// The length lm-eval divides by for `acc_norm`: characters of the choice without the
    /// target delimiter (lm-eval keeps the delimiter " " apart from the choice text).
    pub fn norm_len(choice: &str) -> usize {
        choice.strip_prefix(' ').unwrap_or(choice).chars().count()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TaskData {
    MultipleChoice(Vec<McItem>),
    Perplexity(Vec<String>),
}

/// A named task with its items and what they are.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub name: String,
    pub data: TaskData,
    pub about: TaskAbout,
}

impl Task {
    /// A task built in code (its items are described as such).
    pub fn new(name: &str, data: TaskData) -> Self {
        let about = TaskAbout::local(name).with_items(&data);
        Self { name: name.into(), data, about }
    }
}

/// What a task's items are and how they are asked, for reports, cards (`model-index`)
/// and lm-eval-shaped results: a built-in task is named after a benchmark but is not
/// necessarily that benchmark's lm-evaluation-harness task, and the card must say so.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct TaskAbout {
    /// What the task is, in a few words (`MMLU, validation split, 0-shot`).
    pub title: String,
    /// The Hub dataset id the items come from (`cais/mmlu`), or the local file's name.
    pub dataset: String,
    /// Whether `dataset` is a Hub dataset id.
    pub hub: bool,
    /// The dataset's configuration (`all`, `wsc.fixed`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The dataset split the items are read from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Solved examples put before each question (hf-tailor's built-in tasks: none).
    pub num_fewshot: usize,
    /// The prompt, and how it relates to lm-evaluation-harness's task of the same name.
    pub prompt: String,
    /// What the task asks, in a sentence (the built-in and demo tasks; none for a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Accuracy of guessing uniformly among each item's choices (0.25 for four choices),
    /// averaged over the items; multiple choice only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chance: Option<f64>,
    /// The first item as the model sees it, for cards and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Example>,
}

/// One item of a task: the context, and for multiple choice the choices and the answer.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Example {
    pub context: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    #[serde(default)]
    pub label: usize,
}

/// Longest example text a card shows (perplexity texts can be pages long).
const EXAMPLE_CHARS: usize = 300;

impl TaskAbout {
    /// Items from a local file (or built in code) named `file`.
    pub fn local(file: &str) -> Self {
        Self {
            title: format!("{file} (local file)"),
            dataset: file.into(),
            hub: false,
            config: None,
            split: None,
            num_fewshot: 0,
            prompt: "context and choices as written in the file".into(),
            description: None,
            chance: None,
            example: None,
        }
    }

    /// With the chance level and the first item of `data` filled in.
    pub fn with_items(mut self, data: &TaskData) -> Self {
        let cut = |s: &str| match s.char_indices().nth(EXAMPLE_CHARS) {
            Some((i, _)) => format!("{}…", &s[..i]),
            None => s.to_string(),
        };
        match data {
            TaskData::MultipleChoice(items) if !items.is_empty() => {
                self.chance = Some(items.iter().map(|i| 1.0 / i.choices.len().max(1) as f64).sum::<f64>() / items.len() as f64);
                let first = &items[0];
                self.example =
                    Some(Example { context: cut(&first.context), choices: first.choices.iter().map(|c| cut(c)).collect(), label: first.label });
            }
            TaskData::Perplexity(texts) if !texts.is_empty() => {
                self.chance = None;
                self.example = Some(Example { context: cut(&texts[0]), choices: Vec::new(), label: 0 });
            }
            _ => {}
        }
        self
    }

    /// What a task of `format` read from `path` is.
    pub fn of(format: Option<TaskFormat>, path: &Path) -> Self {
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("task").to_string();
        match format {
            Some(TaskFormat::Mmlu) => Self {
                title: "MMLU, validation split, 0-shot".into(),
                dataset: "cais/mmlu".into(),
                hub: true,
                config: Some("all".into()),
                split: Some("validation".into()),
                num_fewshot: 0,
                prompt: "lm-evaluation-harness's `mmlu` 0-shot prompt (subject line, question, lettered choices, `Answer:`), \
                         on the validation split instead of lm-eval's test split"
                    .into(),
                description: Some("four-choice questions on 57 subjects, from elementary mathematics to law".into()),
                chance: None,
                example: None,
            },
            Some(TaskFormat::Wsc) => Self {
                title: "WSC with the GPTailor A/B prompt (SuperGLUE wsc.fixed, train split), 0-shot".into(),
                dataset: "aps/super_glue".into(),
                hub: true,
                config: Some("wsc.fixed".into()),
                split: Some("train".into()),
                num_fewshot: 0,
                prompt: "the GPTailor prompt (`Does the pronoun # … # refer to * … *?` with choices `A. Yes` / `B. No`); \
                         not lm-evaluation-harness's `wsc` task, which scores two continuations on the validation split"
                    .into(),
                description: Some("whether a pronoun refers to a given noun in a sentence (Winograd schemas), yes or no".into()),
                chance: None,
                example: None,
            },
            Some(TaskFormat::Perplexity) => Self { prompt: "calibration texts (perplexity)".into(), ..Self::local(&file) },
            _ => Self::local(&file),
        }
    }
}

/// How rows of a file become items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskFormat {
    /// `{"context", "choices", "label", "subject"?}` rows.
    MultipleChoice,
    /// `{"text"}` rows.
    Perplexity,
    /// `cais/mmlu` rows (`question`, `subject`, `choices`, `answer`), 0-shot letter prompt.
    Mmlu,
    /// SuperGLUE `wsc.fixed` rows with the GPTailor prompt.
    Wsc,
}

/// A task on the command line: `KIND[:NAME]=PATH` with KIND one of `mc`, `ppl`, `mmlu`,
/// `wsc`, or a bare `PATH` (a JSONL of multiple-choice or text rows, named by its stem).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub name: String,
    pub format: Option<TaskFormat>,
    pub path: PathBuf,
}

/// The calibration texts of a job (the baselines' statistics; the heal's, unless it has
/// texts of its own): the texts of `calibration`'s specs when given, else of `tasks`' `ppl`
/// tasks, file by file in order.
pub fn calibration_texts(calibration: Option<&str>, tasks: &[Task]) -> Result<Vec<String>, EvalError> {
    let extra = match calibration {
        Some(c) => TaskSpec::parse_list(c)?.iter().map(TaskSpec::load).collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let from = if calibration.is_some() { &extra[..] } else { tasks };
    Ok(from
        .iter()
        .flat_map(|t| match &t.data {
            TaskData::Perplexity(texts) => texts.clone(),
            TaskData::MultipleChoice(_) => Vec::new(),
        })
        .collect())
}

impl TaskSpec {
    pub fn parse(spec: &str) -> Result<Self, EvalError> {
        let bad = |m: &str| EvalError::Spec(format!("`{spec}`: {m} (expected KIND[:NAME]=PATH with KIND mc|ppl|mmlu|wsc, or a JSONL path)"));
        if let Some((head, path)) = spec.split_once('=') {
            let (kind, name) = match head.split_once(':') {
                Some((k, n)) => (k, Some(n)),
                None => (head, None),
            };
            let format = match kind {
                "mc" => TaskFormat::MultipleChoice,
                "ppl" => TaskFormat::Perplexity,
                "mmlu" => TaskFormat::Mmlu,
                "wsc" => TaskFormat::Wsc,
                _ => return Err(bad(&format!("unknown kind `{kind}`"))),
            };
            if path.is_empty() {
                return Err(bad("empty path"));
            }
            let name = match name {
                Some("") => return Err(bad("empty name")),
                Some(n) => n.to_string(),
                None if matches!(format, TaskFormat::Mmlu | TaskFormat::Wsc) => kind.to_string(),
                None => stem(Path::new(path)),
            };
            return Ok(Self { name, format: Some(format), path: PathBuf::from(path) });
        }
        if spec.is_empty() {
            return Err(bad("empty"));
        }
        Ok(Self { name: stem(Path::new(spec)), format: None, path: PathBuf::from(spec) })
    }

    /// Several specs separated by commas.
    pub fn parse_list(specs: &str) -> Result<Vec<Self>, EvalError> {
        specs.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Self::parse).collect()
    }

    /// Read the rows and build the task.
    pub fn load(&self) -> Result<Task, EvalError> {
        let split = match self.format {
            Some(TaskFormat::Wsc) => "train",
            _ => "validation",
        };
        let rows = read_rows(&self.path, split)?;
        let format = match self.format {
            Some(f) => f,
            // A bare path: text rows are perplexity, anything else must be multiple choice.
            None if rows.first().is_some_and(|r| r.value.get("text").is_some() && r.value.get("choices").is_none()) => TaskFormat::Perplexity,
            None => TaskFormat::MultipleChoice,
        };
        let data = match format {
            TaskFormat::Perplexity => TaskData::Perplexity(rows.iter().map(|r| str_field(r, "text")).collect::<Result<_, _>>()?),
            TaskFormat::MultipleChoice => TaskData::MultipleChoice(rows.iter().map(generic_item).collect::<Result<_, _>>()?),
            TaskFormat::Mmlu => TaskData::MultipleChoice(rows.iter().map(mmlu_item).collect::<Result<_, _>>()?),
            TaskFormat::Wsc => TaskData::MultipleChoice(rows.iter().map(wsc_item).collect::<Result<_, _>>()?),
        };
        let n = match &data {
            TaskData::MultipleChoice(v) => v.len(),
            TaskData::Perplexity(v) => v.len(),
        };
        if n == 0 {
            return Err(EvalError::Data { origin: self.path.display().to_string(), message: "holds no item".into() });
        }
        let about = TaskAbout::of(self.format, &self.path).with_items(&data);
        Ok(Task { name: self.name.clone(), data, about })
    }
}

fn stem(p: &Path) -> String {
    p.file_stem().and_then(|s| s.to_str()).unwrap_or("task").to_string()
}

fn data_err(r: &SourcedRow, message: String) -> EvalError {
    EvalError::Data { origin: r.origin.clone(), message }
}

fn str_field(r: &SourcedRow, field: &str) -> Result<String, EvalError> {
    r.value.get(field).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| data_err(r, format!("field `{field}` is missing or not a string")))
}

fn usize_field(r: &SourcedRow, field: &str) -> Result<usize, EvalError> {
    r.value
        .get(field)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| data_err(r, format!("field `{field}` is missing or not a non-negative integer")))
}

fn str_list(r: &SourcedRow, field: &str) -> Result<Vec<String>, EvalError> {
    let bad = || data_err(r, format!("field `{field}` is missing or not a list of strings"));
    let list = r.value.get(field).and_then(Value::as_array).ok_or_else(bad)?;
    list.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(bad)).collect()
}

fn checked(r: &SourcedRow, item: McItem) -> Result<McItem, EvalError> {
    if item.choices.len() < 2 {
        return Err(data_err(r, format!("has {} choices; multiple choice needs at least 2", item.choices.len())));
    }
    if item.label >= item.choices.len() {
        return Err(data_err(r, format!("label {} is out of range for {} choices", item.label, item.choices.len())));
    }
    if item.choices.iter().any(String::is_empty) {
        return Err(data_err(r, "has an empty choice".into()));
    }
    Ok(item)
}

fn generic_item(r: &SourcedRow) -> Result<McItem, EvalError> {
    let subject = match r.value.get("subject") {
        None | Some(Value::Null) => None,
        Some(_) => Some(str_field(r, "subject")?),
    };
    checked(r, McItem { context: str_field(r, "context")?, choices: str_list(r, "choices")?, label: usize_field(r, "label")?, subject })
}

const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// lm-eval's `mmlu` (default, 0-shot): the subject description, the question, the
/// lettered choices and `Answer:`; choices are ` A` … ` D`.
pub fn mmlu_prompt(subject: &str, question: &str, choices: &[String]) -> String {
    let mut s = format!("The following are multiple choice questions (with answers) about {}.\n\n", subject.replace('_', " "));
    s.push_str(question.trim());
    for (letter, c) in LETTERS.iter().zip(choices) {
        s.push_str(&format!("\n{letter}. {c}"));
    }
    s.push_str("\nAnswer:");
    s
}

fn mmlu_item(r: &SourcedRow) -> Result<McItem, EvalError> {
    let choices = str_list(r, "choices")?;
    if choices.len() != 4 {
        return Err(data_err(r, format!("MMLU rows have 4 choices, this one has {}", choices.len())));
    }
    let subject = str_field(r, "subject")?;
    let label = match r.value.get("answer") {
        Some(Value::String(s)) => LETTERS.iter().position(|l| l == s).ok_or_else(|| data_err(r, format!("answer `{s}` is not A-D")))?,
        _ => usize_field(r, "answer")?,
    };
    let context = mmlu_prompt(&subject, &str_field(r, "question")?, &choices);
    checked(r, McItem { context, choices: LETTERS.iter().map(|l| format!(" {l}")).collect(), label, subject: Some(subject) })
}

/// lm-eval's `general_detokenize`, applied to the marked WSC passage.
fn general_detokenize(s: &str) -> String {
    let s = s.replace(" n't", "n't").replace(" )", ")").replace("( ", "(").replace("\" ", "\"").replace(" \"", "\"");
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' ' && matches!(chars.peek(), Some('\'') | Some('.') | Some(',')) {
            continue;
        }
        out.push(c);
    }
    out
}

/// The GPTailor WSC prompt (../shared/docs/METHOD.md); the pronoun is marked `*...*` in the
/// passage the way lm-eval's SuperGLUE WSC task marks it.
pub fn wsc_prompt(text: &str, span1_text: &str, span2_index: usize, span2_text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let pre = words[..span2_index.min(words.len())].join(" ");
    // lm-eval slices the raw passage by characters after the joined prefix.
    let skip = pre.chars().count() + span2_text.chars().count() + 1;
    let post: String = text.chars().skip(skip).collect();
    let passage = general_detokenize(&format!("{pre} *{span2_text}*{post}"));
    format!("Passage: {passage}\nDoes the pronoun # {span2_text} # refer to * {span1_text} *?\nA. Yes\nB. No\nAnswer: ")
}

fn wsc_item(r: &SourcedRow) -> Result<McItem, EvalError> {
    let label = match r.value.get("label") {
        Some(Value::Bool(b)) => *b as usize,
        _ => usize_field(r, "label")?,
    };
    let context = wsc_prompt(&str_field(r, "text")?, &str_field(r, "span1_text")?, usize_field(r, "span2_index")?, &str_field(r, "span2_text")?);
    // label 0 (not the referent) is "No" = B, label 1 is "Yes" = A.
    checked(r, McItem { context, choices: vec!["B".into(), "A".into()], label, subject: None })
}

/// The first `budget` items, counted per subject when items have subjects, each with its
/// index in `items` (the item's id in per-item samples).
pub fn first_n(items: &[McItem], budget: usize) -> Vec<(usize, &McItem)> {
    let mut seen: HashMap<Option<&str>, usize> = HashMap::new();
    items
        .iter()
        .enumerate()
        .filter(|(_, it)| {
            let c = seen.entry(it.subject.as_deref()).or_default();
            *c += 1;
            *c <= budget
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s = TaskSpec::parse("mc:arith=t/a.jsonl").unwrap();
        assert_eq!((s.name.as_str(), s.format), ("arith", Some(TaskFormat::MultipleChoice)));
        assert_eq!(TaskSpec::parse("mmlu=data/mmlu").unwrap().name, "mmlu");
        assert_eq!(TaskSpec::parse("x/copy.jsonl").unwrap().name, "copy");
        assert!(TaskSpec::parse("bogus=x").unwrap_err().to_string().contains("unknown kind"));
        assert_eq!(TaskSpec::parse_list("wsc=a.parquet, ppl=b.jsonl").unwrap().len(), 2);
    }

    #[test]
    fn wsc_prompt_marks_the_pronoun_like_lm_eval() {
        let p = wsc_prompt("Mark told Pete many lies about himself , which Pete included in his book .", "Pete", 12, "his");
        assert!(p.starts_with("Passage: Mark told Pete many lies about himself, which Pete included in *his* book.\n"), "{p}");
        let p = wsc_prompt("The man lifted the boy onto his shoulders .", "The man", 6, "his");
        assert_eq!(
            p,
            "Passage: The man lifted the boy onto *his* shoulders.\nDoes the pronoun # his # refer to * The man *?\nA. Yes\nB. No\nAnswer: "
        );
    }

    #[test]
    fn mmlu_prompt_is_lm_eval_default() {
        let c: Vec<String> = ["0", "1", "2", "3"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            mmlu_prompt("abstract_algebra", " Find x. ", &c),
            "The following are multiple choice questions (with answers) about abstract algebra.\n\nFind x.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:"
        );
    }

    #[test]
    fn budget_counts_per_subject() {
        let item = |s: Option<&str>| McItem { context: "c".into(), choices: vec![" a".into(), " b".into()], label: 0, subject: s.map(str::to_owned) };
        let items = vec![item(Some("x")), item(Some("y")), item(Some("x")), item(Some("x")), item(Some("y"))];
        assert_eq!(first_n(&items, 2).iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2, 4]);
        assert_eq!(first_n(&[item(None), item(None), item(None)], 2).len(), 2);
        assert_eq!(McItem::norm_len(" Paris"), 5);
    }
}
