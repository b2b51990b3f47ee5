//! Documented caps on inputs, checked before anything is parsed or allocated, so an absurd
//! or hostile file costs a one-line error instead of minutes of CPU or an allocation abort.

/// The most decoder layers a recipe, a mergekit config or a model may have. The deepest
/// public models have about 130; frankenmerges a few hundred.
pub const MAX_LAYERS: usize = 4096;

/// The largest recipe, mergekit config or source list read (bytes). A recipe of
/// [`MAX_LAYERS`] layers with hashes for hundreds of shards is well under 1 MiB.
pub const MAX_CONFIG_BYTES: usize = 16 << 20;

/// The largest calibration task file read (JSONL or parquet, bytes): MMLU's validation
/// split is about 1 MB, and every item is scored, so larger files are mistakes.
pub const MAX_TASK_FILE_BYTES: u64 = 1 << 30;

/// The longest JSONL line (one task item) read: refused before it is parsed or tokenised.
/// A 128k-token context is about 0.5 MiB of text; no model scores a longer item.
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// The largest search journal read: a 500-trial journal is a few MiB.
pub const MAX_JOURNAL_BYTES: u64 = 1 << 30;

/// The largest tokenizer file read (tokenizer.json, tokenizer.model): the largest public
/// vocabularies' files are about 35 MiB.
pub const MAX_TOKENIZER_BYTES: u64 = 256 << 20;

/// The deepest nesting of YAML/JSON collections accepted. Recipes nest about 6 levels.
pub const MAX_NESTING: usize = 64;

/// Why `text` is refused before parsing (too large, or collections nested too deeply),
/// or None. Nesting counts flow collections (`[`, `{`) outside quotes and comments, and
/// block collections by indentation steps (a line's indent must not exceed
/// 4 × [`MAX_NESTING`] columns).
pub fn yaml_problem(text: &str) -> Option<String> {
    if text.len() > MAX_CONFIG_BYTES {
        return Some(format!("is {} bytes, more than the {} MiB a config may have", text.len(), MAX_CONFIG_BYTES >> 20));
    }
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t', '-']).len();
        if indent > 4 * MAX_NESTING {
            return Some(format!("line {}: indented {indent} columns, nested deeper than {MAX_NESTING} levels", n + 1));
        }
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for c in line.chars() {
            match (quote, c) {
                (Some('"'), '"') if prev != '\\' => quote = None,
                (Some('\''), '\'') => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') if prev.is_whitespace() => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some(format!("line {}: collections nested deeper than {MAX_NESTING} levels", n + 1));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            prev = c;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_or_huge_configs_are_refused_ordinary_ones_pass() {
        assert_eq!(yaml_problem("a: [1, {b: \"[[[\"}]\nc:\n  - d: 1 # [[[[\n"), None);
        let deep = format!("x: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert!(yaml_problem(&deep).unwrap().contains("nested deeper"));
        let mut block = String::new();
        for i in 0..1000 {
            block.push_str(&format!("{}a{i}:\n", " ".repeat(2 * i)));
        }
        assert!(yaml_problem(&block).unwrap().contains("nested deeper"));
        assert!(yaml_problem(&"#".repeat(MAX_CONFIG_BYTES + 1)).unwrap().contains("MiB"));
    }
}
