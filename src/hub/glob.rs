//! File patterns as `huggingface_hub`'s `allow_patterns` read them (Python `fnmatch`): `*`
//! matches any run of characters including `/`, `?` one character, `[abc]` a set. A pattern
//! ending in `/` matches everything below that folder.

/// Whether `path` matches `pattern`.
pub fn matches(pattern: &str, path: &str) -> bool {
    if let Some(dir) = pattern.strip_suffix('/') {
        return matches(&format!("{dir}/*"), path);
    }
    fnmatch(pattern.as_bytes(), path.as_bytes())
}

pub fn matches_any(patterns: &[&str], path: &str) -> bool {
    patterns.iter().any(|p| matches(p, path))
}

fn fnmatch(p: &[u8], s: &[u8]) -> bool {
    // Iterative matcher with one backtrack point for the last `*` (linear for typical patterns).
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some((hit, len)) = class(&p[pi..], s[si]) {
                        if hit {
                            pi += len;
                            si += 1;
                            continue;
                        }
                    } else if s[si] == b'[' {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
                c if c == s[si] => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Match `c` against the class at the start of `p` (`[...]`, `[!...]`); returns (hit, length).
fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = p.get(1) == Some(&b'!');
    if negate {
        i += 1;
    }
    let start = i;
    let mut hit = false;
    while i < p.len() {
        if p[i] == b']' && i > start {
            return Some((hit != negate, i + 1));
        }
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            hit |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn fnmatch_semantics() {
        assert!(matches("*.parquet", "all/test-00000-of-00001.parquet"));
        assert!(matches("all/test-*.parquet", "all/test-00000-of-00001.parquet"));
        assert!(!matches("all/dev-*.parquet", "all/test-00000-of-00001.parquet"));
        assert!(matches("data/", "data/x/y.parquet"));
        assert!(matches("model-0000?-of-*.safetensors", "model-00001-of-00002.safetensors"));
        assert!(matches("[!x]*", "abc") && !matches("[!x]*", "xbc"));
        assert!(matches("[a-c]z", "bz") && !matches("[a-c]z", "dz"));
        assert!(matches("config.json", "config.json") && !matches("config.json", "xconfig.json"));
        assert!(matches("*", "") && !matches("?", ""));
    }
}
