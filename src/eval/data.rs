//! Reading task rows from local files: JSONL (one object a line), parquet files, or folders
//! of parquet files (as Hub dataset repos store them). Rows become JSON objects so that one
//! set of item parsers serves both formats.

use std::path::{Path, PathBuf};

use parquet::file::reader::SerializedFileReader;
use parquet::record::Field;
use serde_json::{Map, Value};

use super::EvalError;

/// A row and where it came from (for error messages).
pub struct SourcedRow {
    pub value: Value,
    pub origin: String,
}

/// Every row of `path`: a `.jsonl`/`.json` file, a `.parquet` file, or a folder of parquet
/// files (recursively, in path order). For a folder holding an `all/` sub-folder (the
/// `cais/mmlu` layout, which also has one folder per subject) only `all/` is read, and
/// when some file names start with `split` only those are read.
pub fn read_rows(path: &Path, split: &str) -> Result<Vec<SourcedRow>, EvalError> {
    if path.is_dir() {
        let root = if path.join("all").is_dir() { path.join("all") } else { path.to_path_buf() };
        let mut files = Vec::new();
        collect_parquet(&root, &mut files)?;
        files.sort();
        let named: Vec<PathBuf> =
            files.iter().filter(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(split))).cloned().collect();
        if !named.is_empty() {
            files = named;
        }
        if files.is_empty() {
            return Err(EvalError::Data { origin: path.display().to_string(), message: "the folder holds no .parquet file".into() });
        }
        let mut rows = Vec::new();
        for f in files {
            rows.extend(read_parquet(&f)?);
        }
        return Ok(rows);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => read_parquet(path),
        Some("jsonl") | Some("json") => read_jsonl(path),
        _ => Err(EvalError::Data {
            origin: path.display().to_string(),
            message: "expected a .jsonl or .parquet file, or a folder of parquet files".into(),
        }),
    }
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), EvalError> {
    let io = |source| EvalError::Io { path: dir.display().to_string(), source };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.is_dir() {
            collect_parquet(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "parquet") {
            out.push(p);
        }
    }
    Ok(())
}

/// One object a line, read line by line: the file is capped at
/// [`MAX_TASK_FILE_BYTES`](crate::limits::MAX_TASK_FILE_BYTES) while it is read, and each
/// line at [`MAX_LINE_BYTES`](crate::limits::MAX_LINE_BYTES) before it is parsed (let alone
/// tokenised); a line that is not UTF-8 is refused with its number.
fn read_jsonl(path: &Path) -> Result<Vec<SourcedRow>, EvalError> {
    use crate::limits::MAX_LINE_BYTES;
    use std::io::{BufRead, Read};
    let io = |source| EvalError::Io { path: path.display().to_string(), source };
    let mut reader = std::io::BufReader::new(crate::fsutil::open_input(path, crate::limits::MAX_TASK_FILE_BYTES).map_err(io)?);
    let mut rows = Vec::new();
    let mut buf = Vec::new();
    for n in 1.. {
        buf.clear();
        if (&mut reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut buf).map_err(io)? == 0 {
            break;
        }
        let origin = format!("{}:{n}", path.display());
        let bad = |message: String| EvalError::Data { origin: origin.clone(), message };
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            return Err(bad(format!("the line is longer than {} (one item a line)", crate::human::human_bytes(MAX_LINE_BYTES as u64))));
        }
        let line = std::str::from_utf8(&buf).map_err(|_| bad("is not UTF-8 text".into()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        rows.push(SourcedRow { value, origin });
    }
    Ok(rows)
}

fn read_parquet(path: &Path) -> Result<Vec<SourcedRow>, EvalError> {
    let bad = |message: String| EvalError::Data { origin: path.display().to_string(), message };
    // Parquet is read at random offsets: the type and the size are checked up front.
    let file = crate::fsutil::open_input(path, crate::limits::MAX_TASK_FILE_BYTES)
        .and_then(|f| f.into_checked_file())
        .map_err(|source| EvalError::Io { path: path.display().to_string(), source })?;
    let reader = SerializedFileReader::new(file).map_err(|e| bad(e.to_string()))?;
    let mut rows = Vec::new();
    for (i, row) in reader.into_iter().enumerate() {
        let row = row.map_err(|e| bad(format!("row {i}: {e}")))?;
        let obj: Map<String, Value> = row.get_column_iter().map(|(k, f)| (k.clone(), field_json(f))).collect();
        rows.push(SourcedRow { value: Value::Object(obj), origin: format!("{} row {i}", path.display()) });
    }
    Ok(rows)
}

/// A parquet field as JSON (the subset task rows use: scalars, strings, lists, structs).
fn field_json(f: &Field) -> Value {
    match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(v) => (*v).into(),
        Field::Short(v) => (*v).into(),
        Field::Int(v) => (*v).into(),
        Field::Long(v) => (*v).into(),
        Field::UByte(v) => (*v).into(),
        Field::UShort(v) => (*v).into(),
        Field::UInt(v) => (*v).into(),
        Field::ULong(v) => (*v).into(),
        Field::Float16(v) => f64::from(v.to_f32()).into(),
        Field::Float(v) => f64::from(*v).into(),
        Field::Double(v) => (*v).into(),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => Value::String(String::from_utf8_lossy(b.data()).into_owned()),
        Field::Date(v) | Field::TimeMillis(v) => (*v).into(),
        Field::TimeMicros(v) | Field::TimestampMillis(v) | Field::TimestampMicros(v) => (*v).into(),
        Field::Group(row) => Value::Object(row.get_column_iter().map(|(k, f)| (k.clone(), field_json(f))).collect()),
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(field_json).collect()),
        Field::MapInternal(map) => Value::Array(map.entries().iter().map(|(k, v)| Value::Array(vec![field_json(k), field_json(v)])).collect()),
        Field::Decimal(d) => Value::String(format!("{d:?}")),
    }
}
