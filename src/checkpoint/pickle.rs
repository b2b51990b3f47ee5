//! A restricted unpickler for PyTorch state dicts (`data.pkl` inside a `torch.save` zip).
//!
//! It never executes pickled code: it implements only the opcodes a state dict uses and
//! knows three callables by name (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`
//! and the typed storage classes), which it interprets as data. Any other opcode or global
//! is refused, naming it, so a pickle carrying a `__reduce__` payload (`os.system`, …) fails
//! before anything could run.

use crate::dtype::Dtype;

/// Most values (stack plus memo) one pickle may hold: a state dict has a handful per tensor.
const MAX_VALUES: usize = 10_000_000;
/// Most values one pickle may copy out of its memo: bounds a "billion laughs" pickle that
/// nests memo references into exponentially large values.
const MAX_COPIED: usize = 5_000_000;
/// Deepest nesting accepted (a state dict's is 3, its `_metadata`); also keeps dropping a
/// value from recursing without bound.
const MAX_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    #[error("refused pickle opcode {0} at byte {1} (only a PyTorch state dict is read; pickled code is never run)")]
    Opcode(String, usize),
    #[error("refused pickle global `{0}` (only a PyTorch state dict is read; pickled code is never run)")]
    Global(String),
    #[error("malformed pickle at byte {pos}: {why}")]
    Malformed { pos: usize, why: String },
}

/// One tensor of the state dict: where its elements lie in which storage record.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub dtype: Dtype,
    /// The storage record's key (`NAME/data/<key>` in the zip).
    pub storage: String,
    /// Elements in the storage, as the pickle declares it.
    pub storage_numel: u64,
    /// Offset of the first element, in elements.
    pub offset: u64,
    pub shape: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Global {
    OrderedDict,
    RebuildTensor,
    Storage(Dtype),
}

#[derive(Debug, Clone)]
enum Value {
    None,
    Bool,
    Int(i64),
    /// A float's value is never part of a tensor's structure.
    Float,
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage {
        dtype: Dtype,
        key: String,
        numel: u64,
    },
    Tensor(TensorRef),
    Mark,
}

/// Resolve a `module name` pair against the allow-list.
fn global(module: &str, name: &str) -> Result<Global, PickleError> {
    let storage = |n: &str| match n {
        "FloatStorage" => Some(Dtype::F32),
        "HalfStorage" => Some(Dtype::F16),
        "BFloat16Storage" => Some(Dtype::Bf16),
        _ => None,
    };
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensor),
        ("torch" | "torch.storage", n) if storage(n).is_some() => Ok(Global::Storage(storage(n).expect("checked"))),
        _ => Err(PickleError::Global(format!("{module}.{name}"))),
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bad(&self, why: impl Into<String>) -> PickleError {
        PickleError::Malformed { pos: self.pos, why: why.into() }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        if n > self.b.len() - self.pos {
            return Err(self.bad(format!("needs {n} more bytes, {} left", self.b.len() - self.pos)));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.b[self.pos..];
        let n = rest.iter().position(|&c| c == b'\n').ok_or_else(|| self.bad("unterminated line"))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| self.bad("line is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn utf8(&mut self, n: usize) -> Result<String, PickleError> {
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.bad("string is not UTF-8"))
    }
}

/// Parse `data.pkl`: the tensors of the state dict by name, in pickle order.
pub fn read_state_dict(bytes: &[u8]) -> Result<Vec<(String, TensorRef)>, PickleError> {
    let mut r = Reader { b: bytes, pos: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: std::collections::HashMap<u32, Value> = std::collections::HashMap::new();
    let mut copied = 0usize;
    loop {
        if stack.len() + memo.len() > MAX_VALUES || copied > MAX_COPIED {
            return Err(r.bad("too many values"));
        }
        let at = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                let v = r.u8()?;
                if v > 5 {
                    return Err(r.bad(format!("protocol {v}")));
                }
            }
            0x95 => {
                r.take(8)?;
            } // FRAME: a length hint only
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'(' => stack.push(Value::Mark),
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(Value::Str(r.utf8(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Value::Str(r.utf8(n)?));
            }
            b'J' => stack.push(Value::Int(i32::from_le_bytes(r.take(4)?.try_into().expect("4")) as i64)),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(u16::from_le_bytes(r.take(2)?.try_into().expect("2")) as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    return Err(r.bad("LONG1 wider than 64 bits"));
                }
                let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                buf[..n].copy_from_slice(b);
                stack.push(Value::Int(i64::from_le_bytes(buf)));
            }
            b'G' => {
                r.take(8)?;
                stack.push(Value::Float);
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool),
            0x89 => stack.push(Value::Bool),
            b't' => {
                let items = pop_mark(&mut stack, &r)?;
                shallow_items(&items, &r)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(r.bad("stack underflow"));
                }
                let items = stack.split_off(stack.len() - n);
                if items.iter().any(|v| matches!(v, Value::Mark)) {
                    return Err(r.bad("mark inside a tuple"));
                }
                shallow_items(&items, &r)?;
                stack.push(Value::Tuple(items));
            }
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                stack.push(Value::Global(global(&module, &name)?));
            }
            0x93 => {
                let name = pop(&mut stack, &r)?;
                let module = pop(&mut stack, &r)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(global(&m, &n)?)),
                    _ => return Err(r.bad("STACK_GLOBAL needs two strings")),
                }
            }
            b'Q' => {
                let pid = pop(&mut stack, &r)?;
                stack.push(persistent_load(pid, &r)?);
            }
            b'q' | b'r' | 0x94 => {
                let idx = match op {
                    b'q' => r.u8()? as u32,
                    b'r' => r.u32()?,
                    _ => memo.len() as u32,
                };
                let top = stack.last().ok_or_else(|| r.bad("memo of an empty stack"))?;
                copied += nodes(top);
                if matches!(top, Value::Mark) {
                    return Err(r.bad("memo of a mark"));
                }
                memo.insert(idx, top.clone());
            }
            b'h' | b'j' => {
                let idx = if op == b'h' { r.u8()? as u32 } else { r.u32()? };
                let v = memo.get(&idx).ok_or_else(|| r.bad(format!("memo {idx} is unset")))?;
                copied += nodes(v);
                if copied > MAX_COPIED {
                    return Err(r.bad("too many values copied from the memo"));
                }
                let v = v.clone();
                stack.push(v);
            }
            b'R' => {
                let args = pop(&mut stack, &r)?;
                let func = pop(&mut stack, &r)?;
                stack.push(reduce(func, args, &r)?);
            }
            b'b' => {
                // BUILD: the state of an OrderedDict subclass (torch's `_metadata`) is dropped.
                pop(&mut stack, &r)?;
                if !matches!(stack.last(), Some(Value::Dict(_))) {
                    return Err(PickleError::Opcode("BUILD (on anything but a dict)".into(), at));
                }
            }
            b's' => {
                let v = pop(&mut stack, &r)?;
                let k = pop(&mut stack, &r)?;
                shallow_items(&[k.clone(), v.clone()], &r)?;
                dict_top(&mut stack, &r)?.push((k, v));
            }
            b'u' => {
                let items = pop_mark(&mut stack, &r)?;
                shallow_items(&items, &r)?;
                if !items.len().is_multiple_of(2) {
                    return Err(r.bad("SETITEMS with an odd number of items"));
                }
                let d = dict_top(&mut stack, &r)?;
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            b'a' | b'e' => {
                let items = if op == b'a' { vec![pop(&mut stack, &r)?] } else { pop_mark(&mut stack, &r)? };
                shallow_items(&items, &r)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err(r.bad("APPEND to a non-list")),
                }
            }
            b'.' => break,
            _ => return Err(PickleError::Opcode(opcode_name(op), at)),
        }
    }
    let top = stack.pop().ok_or_else(|| r.bad("empty stack at STOP"))?;
    let Value::Dict(items) = top else { return Err(r.bad("the pickle is not a dict of tensors")) };
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => out.push((k, t)),
            (Value::Str(k), _) => return Err(r.bad(format!("entry `{k}` is not a tensor"))),
            _ => return Err(r.bad("a state-dict key is not a string")),
        }
    }
    Ok(out)
}

/// How many values `v` holds, itself included.
fn nodes(v: &Value) -> usize {
    match v {
        Value::Tuple(t) | Value::List(t) => 1 + t.iter().map(nodes).sum::<usize>(),
        Value::Dict(d) => 1 + d.iter().map(|(k, v)| nodes(k) + nodes(v)).sum::<usize>(),
        _ => 1,
    }
}

/// Whether `v` nests at most `depth` containers deep.
fn shallow(v: &Value, depth: usize) -> bool {
    match v {
        Value::Tuple(t) | Value::List(t) => depth > 0 && t.iter().all(|c| shallow(c, depth - 1)),
        Value::Dict(d) => depth > 0 && d.iter().all(|(k, v)| shallow(k, depth - 1) && shallow(v, depth - 1)),
        _ => true,
    }
}

/// Refuse items that would make a container nest deeper than [`MAX_DEPTH`].
fn shallow_items(items: &[Value], r: &Reader) -> Result<(), PickleError> {
    if items.iter().all(|v| shallow(v, MAX_DEPTH - 1)) {
        Ok(())
    } else {
        Err(r.bad(format!("values nested deeper than {MAX_DEPTH}")))
    }
}

fn pop(stack: &mut Vec<Value>, r: &Reader) -> Result<Value, PickleError> {
    match stack.pop() {
        Some(Value::Mark) | None => Err(r.bad("stack underflow")),
        Some(v) => Ok(v),
    }
}

fn pop_mark(stack: &mut Vec<Value>, r: &Reader) -> Result<Vec<Value>, PickleError> {
    let m = stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or_else(|| r.bad("no mark"))?;
    let items = stack.split_off(m + 1);
    stack.pop();
    Ok(items)
}

fn dict_top<'s>(stack: &'s mut [Value], r: &Reader) -> Result<&'s mut Vec<(Value, Value)>, PickleError> {
    match stack.last_mut() {
        Some(Value::Dict(d)) => Ok(d),
        _ => Err(r.bad("SETITEM on a non-dict")),
    }
}

/// `('storage', <StorageType>, key, location, numel)`, as `torch.save` writes a persistent id.
fn persistent_load(pid: Value, r: &Reader) -> Result<Value, PickleError> {
    let Value::Tuple(t) = pid else { return Err(r.bad("persistent id is not a tuple")) };
    match t.as_slice() {
        [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), Value::Str(_location), Value::Int(numel)]
            if tag == "storage" && *numel >= 0 =>
        {
            if key.is_empty() || !key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                return Err(r.bad(format!("storage key `{key}` is not a plain name")));
            }
            Ok(Value::Storage { dtype: *dtype, key: key.clone(), numel: *numel as u64 })
        }
        _ => Err(r.bad("persistent id is not a typed storage of f32, f16 or bf16")),
    }
}

fn reduce(func: Value, args: Value, r: &Reader) -> Result<Value, PickleError> {
    let Value::Tuple(args) = args else { return Err(r.bad("REDUCE arguments are not a tuple")) };
    match func {
        Value::Global(Global::OrderedDict) if args.is_empty() => Ok(Value::Dict(Vec::new())),
        Value::Global(Global::RebuildTensor) => rebuild_tensor(args, r),
        Value::Global(g) => Err(r.bad(format!("REDUCE of {g:?} with these arguments"))),
        _ => Err(r.bad("REDUCE of a non-callable")),
    }
}

fn ints(v: &Value, r: &Reader, what: &str) -> Result<Vec<i64>, PickleError> {
    match v {
        Value::Tuple(t) => t.iter().map(|x| if let Value::Int(i) = x { Ok(*i) } else { Err(r.bad(format!("{what} holds a non-integer"))) }).collect(),
        _ => Err(r.bad(format!("{what} is not a tuple"))),
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`;
/// only contiguous layouts are accepted (a state dict of a plain `nn.Module` has no others).
fn rebuild_tensor(args: Vec<Value>, r: &Reader) -> Result<Value, PickleError> {
    if !(6..=7).contains(&args.len()) {
        return Err(r.bad(format!("_rebuild_tensor_v2 with {} arguments", args.len())));
    }
    let Value::Storage { dtype, key, numel } = &args[0] else { return Err(r.bad("_rebuild_tensor_v2 without a storage")) };
    let Value::Int(offset) = args[1] else { return Err(r.bad("tensor offset is not an integer")) };
    let size = ints(&args[2], r, "tensor size")?;
    let stride = ints(&args[3], r, "tensor stride")?;
    if offset < 0 || size.len() != stride.len() || size.iter().any(|&s| s < 0) {
        return Err(r.bad("negative offset or size, or size and stride of different ranks"));
    }
    let mut expect: i64 = 1;
    let mut elems: u64 = 1;
    for (&s, &st) in size.iter().zip(&stride).rev() {
        if s != 1 && st != expect {
            return Err(r.bad(format!("non-contiguous tensor (size {size:?}, stride {stride:?})")));
        }
        expect = expect.checked_mul(s).ok_or_else(|| r.bad("tensor size overflows"))?;
        elems = elems.checked_mul(s as u64).ok_or_else(|| r.bad("tensor size overflows"))?;
    }
    if (offset as u64).checked_add(elems).is_none_or(|end| end > *numel) {
        return Err(r.bad(format!("tensor of {elems} elements at offset {offset} overruns its storage of {numel}")));
    }
    if !matches!(args[4], Value::Bool) {
        return Err(r.bad("tensor `requires_grad` is not a boolean"));
    }
    if !matches!(args[5], Value::Dict(ref d) if d.is_empty()) {
        return Err(r.bad("tensor with backward hooks"));
    }
    Ok(Value::Tensor(TensorRef {
        dtype: *dtype,
        storage: key.clone(),
        storage_numel: *numel,
        offset: offset as u64,
        shape: size.iter().map(|&s| s as usize).collect(),
    }))
}

fn opcode_name(op: u8) -> String {
    let name = match op {
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'P' => "PERSID",
        0x82..=0x84 => "EXT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'B' | b'C' => "BINSTRING/BINBYTES",
        0x8b => "LONG4",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        _ => "",
    };
    if name.is_empty() {
        format!("0x{op:02x}")
    } else {
        format!("{name} (0x{op:02x})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_global_and_opcode() {
        let p = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.";
        let e = read_state_dict(p).unwrap_err().to_string();
        assert!(e.contains("os.system"), "{e}");
        let e = read_state_dict(b"\x80\x02\x81.").unwrap_err().to_string();
        assert!(e.contains("NEWOBJ"), "{e}");
        assert!(read_state_dict(b"\x80\x02}X\xff\xff\xff\xff").is_err());
        assert!(read_state_dict(b"").is_err());
    }

    /// A one-tensor state dict `{"w": tensor}` as `torch.save` pickles it.
    fn one_tensor(storage: &str, numel: u8, offset: u8, size: [u8; 2], stride: [u8; 2]) -> Vec<u8> {
        let s = |x: &str| [&[b'X'][..], &(x.len() as u32).to_le_bytes(), x.as_bytes()].concat();
        let mut p = b"\x80\x02}(".to_vec();
        p.extend(s("w"));
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        p.extend(s("storage"));
        p.extend(format!("ctorch\n{storage}\n").as_bytes());
        p.extend(s("0"));
        p.extend(s("cpu"));
        p.extend([b'K', numel, b't', b'Q', b'K', offset, b'K', size[0], b'K', size[1], 0x86, b'K', stride[0], b'K', stride[1], 0x86, 0x89]);
        p.extend(b"ccollections\nOrderedDict\n)RtRu.");
        p
    }

    #[test]
    fn reads_a_tensor_and_refuses_bad_layouts() {
        let t = read_state_dict(&one_tensor("HalfStorage", 8, 2, [2, 3], [3, 1])).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, "w");
        assert_eq!(t[0].1, TensorRef { dtype: Dtype::F16, storage: "0".into(), storage_numel: 8, offset: 2, shape: vec![2, 3] });
        let e = read_state_dict(&one_tensor("FloatStorage", 6, 0, [2, 3], [1, 2])).unwrap_err().to_string();
        assert!(e.contains("non-contiguous"), "{e}");
        let e = read_state_dict(&one_tensor("FloatStorage", 6, 1, [2, 3], [3, 1])).unwrap_err().to_string();
        assert!(e.contains("overruns its storage"), "{e}");
        let e = read_state_dict(&one_tensor("LongStorage", 6, 0, [2, 3], [3, 1])).unwrap_err().to_string();
        assert!(e.contains("torch.LongStorage"), "{e}");
        // Deep nesting and exponential memo copies are refused, not followed.
        let deep = [b"\x80\x02".to_vec(), vec![b')'; 1], vec![0x85; 100_000], b".".to_vec()].concat();
        assert!(read_state_dict(&deep).unwrap_err().to_string().contains("nested deeper"));
        let mut laughs = b"\x80\x02)q\x00".to_vec();
        for i in 0..60u8 {
            laughs.extend([b'h', i, b'h', i, 0x86, b'q', i + 1]);
        }
        laughs.push(b'.');
        assert!(read_state_dict(&laughs).is_err());
        let mut wide = b"\x80\x02)q\x00".to_vec();
        for i in 0..6u8 {
            wide.push(b'(');
            for _ in 0..200 {
                wide.extend([b'h', i]);
            }
            wide.extend([b't', b'q', i + 1]);
        }
        wide.push(b'.');
        let e = read_state_dict(&wide).unwrap_err().to_string();
        assert!(e.contains("copied from the memo"), "{e}");
        // Cut anywhere, it is an error, never a panic.
        let full = one_tensor("FloatStorage", 6, 0, [2, 3], [3, 1]);
        for n in 0..full.len() {
            assert!(read_state_dict(&full[..n]).is_err(), "cut at {n}");
        }
    }
}
