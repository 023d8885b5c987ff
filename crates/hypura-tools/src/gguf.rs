//! The one GGUF writer of the project (synthetic models, test files), and a raw walker that
//! reads an existing GGUF's header: its key/value records, copied as they are (a real
//! model's tokenizer), and its tensors (to build an MoE from a dense model).
//!
//! The writer lays a file out the way llama.cpp's reader expects it: header, key/values,
//! tensor infos, padding to the alignment, then each tensor's data at its offset, each offset
//! padded to the alignment.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// GGUF value type ids.
mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// A metadata value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// A string.
    Str(String),
    /// An array of strings.
    StrArray(Vec<String>),
    /// An array of `int32`.
    I32Array(Vec<i32>),
    /// An array of `float32`.
    F32Array(Vec<f32>),
    /// An array of `bool`.
    BoolArray(Vec<bool>),
    /// A value copied from another file: its type id followed by its bytes.
    Raw(Vec<u8>),
}

/// A tensor to describe in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost first (ggml's `ne`).
    pub dims: Vec<u64>,
    /// ggml type id.
    pub ggml_type: u32,
    /// Bytes of data.
    pub nbytes: u64,
}

/// Builds a GGUF (version 3) header.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorEntry>,
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_array_header(out: &mut Vec<u8>, item_type: u32, count: usize) {
    out.extend_from_slice(&value_type::ARRAY.to_le_bytes());
    out.extend_from_slice(&item_type.to_le_bytes());
    out.extend_from_slice(&(count as u64).to_le_bytes());
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty file description with llama.cpp's default alignment (32).
    pub fn new() -> Self {
        Self {
            alignment: 32,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Adds a key/value (written in the order added). `general.alignment` also sets the
    /// alignment the data section uses.
    pub fn meta(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        let key = key.into();
        if key == "general.alignment" {
            if let Value::U32(a) = value {
                self.alignment = u64::from(a.max(1));
            }
        }
        self.metadata.push((key, value));
        self
    }

    /// Replaces the value of `key` (where it was added), adds it if absent, or removes it
    /// when `value` is `None`.
    pub fn set_meta(&mut self, key: &str, value: Option<Value>) -> &mut Self {
        let at = self.metadata.iter().position(|(k, _)| k == key);
        match (at, value) {
            (Some(i), Some(v)) => self.metadata[i].1 = v,
            (Some(i), None) => {
                self.metadata.remove(i);
            }
            (None, Some(v)) => {
                self.meta(key, v);
            }
            (None, None) => {}
        }
        self
    }

    /// Adds a tensor; its data offset follows the previous tensor's, padded.
    pub fn tensor(&mut self, entry: TensorEntry) -> &mut Self {
        self.tensors.push(entry);
        self
    }

    /// The tensors, in order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// The alignment of the data section and of every tensor's offset.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Each tensor's offset from the start of the data section.
    pub fn data_offsets(&self) -> Vec<u64> {
        let mut offset = 0u64;
        self.tensors
            .iter()
            .map(|t| {
                let at = offset;
                offset += t.nbytes.div_ceil(self.alignment) * self.alignment;
                at
            })
            .collect()
    }

    /// Bytes of the data section (every tensor padded to the alignment).
    pub fn data_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.nbytes.div_ceil(self.alignment) * self.alignment)
            .sum()
    }

    /// The header: magic, version, counts, key/values, tensor infos, padded to the alignment.
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            write_value(&mut out, value);
        }
        for (t, offset) in self.tensors.iter().zip(self.data_offsets()) {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        let padded = (out.len() as u64).div_ceil(self.alignment) * self.alignment;
        out.resize(padded as usize, 0);
        out
    }

    /// Writes the whole file with every tensor's data filled by `fill(index, buffer)`.
    pub fn write_file(
        &self,
        path: &Path,
        mut fill: impl FnMut(usize, &mut Vec<u8>),
    ) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(File::create(path)?);
        out.write_all(&self.header_bytes())?;
        let mut data = Vec::new();
        for (i, t) in self.tensors.iter().enumerate() {
            data.clear();
            fill(i, &mut data);
            data.resize(t.nbytes as usize, 0);
            let padded = t.nbytes.div_ceil(self.alignment) * self.alignment;
            data.resize(padded as usize, 0);
            out.write_all(&data)?;
        }
        out.flush()
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U32(v) => {
            out.extend_from_slice(&value_type::U32.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::I32(v) => {
            out.extend_from_slice(&value_type::I32.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::F32(v) => {
            out.extend_from_slice(&value_type::F32.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::Bool(v) => {
            out.extend_from_slice(&value_type::BOOL.to_le_bytes());
            out.push(u8::from(*v));
        }
        Value::Str(s) => {
            out.extend_from_slice(&value_type::STRING.to_le_bytes());
            put_string(out, s);
        }
        Value::StrArray(items) => {
            put_array_header(out, value_type::STRING, items.len());
            for s in items {
                put_string(out, s);
            }
        }
        Value::I32Array(items) => {
            put_array_header(out, value_type::I32, items.len());
            for v in items {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Value::F32Array(items) => {
            put_array_header(out, value_type::F32, items.len());
            for v in items {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Value::BoolArray(items) => {
            put_array_header(out, value_type::BOOL, items.len());
            out.extend(items.iter().map(|v| u8::from(*v)));
        }
        Value::Raw(bytes) => out.extend_from_slice(bytes),
    }
}

/// Why raw records could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a GGUF this walker understands.
    #[error("{path} is not a valid GGUF file: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Largest key or string this walker accepts (no real GGUF comes near it).
const MAX_STRING_BYTES: u64 = 1 << 24;

struct Walker<R> {
    reader: R,
    path: String,
    /// Bytes read so far.
    position: u64,
}

impl<R: Read> Walker<R> {
    fn bad(&self, reason: impl Into<String>) -> RecordsError {
        RecordsError::Malformed {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: u64, keep: &mut Vec<u8>) -> Result<(), RecordsError> {
        let before = keep.len();
        (&mut self.reader)
            .take(n)
            .read_to_end(keep)
            .map_err(|source| RecordsError::Io {
                path: self.path.clone(),
                source,
            })?;
        if (keep.len() - before) as u64 != n {
            return Err(self.bad("unexpected end of file in the header"));
        }
        self.position += n;
        Ok(())
    }

    fn u32(&mut self, keep: &mut Vec<u8>) -> Result<u32, RecordsError> {
        self.take(4, keep)?;
        let b = &keep[keep.len() - 4..];
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, keep: &mut Vec<u8>) -> Result<u64, RecordsError> {
        self.take(8, keep)?;
        let b = &keep[keep.len() - 8..];
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn string(&mut self, keep: &mut Vec<u8>) -> Result<Vec<u8>, RecordsError> {
        let len = self.u64(keep)?;
        if len > MAX_STRING_BYTES {
            return Err(self.bad(format!("a string of {len} bytes")));
        }
        let start = keep.len();
        self.take(len, keep)?;
        Ok(keep[start..].to_vec())
    }

    fn value(&mut self, value_type: u32, keep: &mut Vec<u8>) -> Result<(), RecordsError> {
        use value_type::*;
        match value_type {
            U8 | I8 | BOOL => self.take(1, keep),
            U16 | I16 => self.take(2, keep),
            U32 | I32 | F32 => self.take(4, keep),
            U64 | I64 | F64 => self.take(8, keep),
            STRING => self.string(keep).map(|_| ()),
            ARRAY => {
                let item = self.u32(keep)?;
                let count = self.u64(keep)?;
                if item == ARRAY {
                    return Err(self.bad("nested arrays"));
                }
                for _ in 0..count {
                    self.value(item, keep)?;
                }
                Ok(())
            }
            other => Err(self.bad(format!("unknown value type {other}"))),
        }
    }
}

/// Copies the key/value records whose key starts with `prefix` out of the GGUF at `path`:
/// `(key, value type id + value bytes)`, ready for [`Value::Raw`].
pub fn raw_records(path: &Path, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, RecordsError> {
    let mut records = read_layout(path)?.records;
    records.retain(|(k, _)| k.starts_with(prefix));
    Ok(records)
}

/// A tensor of an existing GGUF, as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTensor {
    /// Name.
    pub name: String,
    /// Dimensions, innermost first.
    pub dims: Vec<u64>,
    /// ggml type id.
    pub ggml_type: u32,
    /// Where its data starts in the file.
    pub file_offset: u64,
}

/// An existing GGUF's header: every key/value record (raw, for [`Value::Raw`]) and tensor.
#[derive(Debug, Clone)]
pub struct SourceLayout {
    /// `(key, value type id + value bytes)`, in file order.
    pub records: Vec<(String, Vec<u8>)>,
    /// The tensors, in file order.
    pub tensors: Vec<SourceTensor>,
}

/// Most tensors or records a header may declare here (no real GGUF comes near it).
const MAX_ENTRIES: u64 = 1 << 20;

/// Reads the header of the GGUF at `path`: its records and tensors (the data's offsets
/// resolved against the header's end and alignment; not checked against the file's size).
pub fn read_layout(path: &Path) -> Result<SourceLayout, RecordsError> {
    let display = path.display().to_string();
    let file = File::open(path).map_err(|source| RecordsError::Io {
        path: display.clone(),
        source,
    })?;
    let mut walker = Walker {
        reader: BufReader::with_capacity(1 << 20, file),
        path: display,
        position: 0,
    };
    let mut scratch = Vec::new();
    walker.take(4, &mut scratch)?;
    if scratch != b"GGUF" {
        return Err(walker.bad("missing GGUF magic"));
    }
    let version = walker.u32(&mut scratch)?;
    if !(2..=3).contains(&version) {
        return Err(walker.bad(format!("unsupported GGUF version {version}")));
    }
    let n_tensors = walker.u64(&mut scratch)?;
    let n_kv = walker.u64(&mut scratch)?;
    if n_tensors > MAX_ENTRIES || n_kv > MAX_ENTRIES {
        return Err(walker.bad(format!("{n_tensors} tensors and {n_kv} records")));
    }
    let mut records = Vec::new();
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        scratch.clear();
        let key = String::from_utf8_lossy(&walker.string(&mut scratch)?).into_owned();
        let mut value = Vec::new();
        let value_type = walker.u32(&mut value)?;
        walker.value(value_type, &mut value)?;
        if key == "general.alignment" && value_type == value_type::U32 {
            let a = u32::from_le_bytes([value[4], value[5], value[6], value[7]]);
            if a == 0 || !a.is_power_of_two() {
                return Err(walker.bad(format!("general.alignment = {a}")));
            }
            alignment = u64::from(a);
        }
        records.push((key, value));
    }
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        scratch.clear();
        let name = String::from_utf8_lossy(&walker.string(&mut scratch)?).into_owned();
        let n_dims = walker.u32(&mut scratch)?;
        if !(1..=4).contains(&n_dims) {
            return Err(walker.bad(format!("{name}: {n_dims} dimensions")));
        }
        let dims = (0..n_dims)
            .map(|_| walker.u64(&mut scratch))
            .collect::<Result<Vec<u64>, _>>()?;
        let ggml_type = walker.u32(&mut scratch)?;
        let offset = walker.u64(&mut scratch)?;
        tensors.push(SourceTensor {
            name,
            dims,
            ggml_type,
            file_offset: offset,
        });
    }
    let data_start = walker.position.div_ceil(alignment) * alignment;
    for t in &mut tensors {
        t.file_offset = data_start
            .checked_add(t.file_offset)
            .ok_or_else(|| walker.bad(format!("{}: offset past any file", t.name)))?;
    }
    Ok(SourceLayout { records, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_header_the_walker_reads_back() {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Value::Str("llama".into()))
            .meta(
                "tokenizer.ggml.tokens",
                Value::StrArray(vec!["a".into(), "bc".into()]),
            )
            .meta("tokenizer.ggml.scores", Value::F32Array(vec![0.0, -1.0]))
            .tensor(TensorEntry {
                name: "t0".into(),
                dims: vec![8, 2],
                ggml_type: 0,
                nbytes: 64,
            })
            .tensor(TensorEntry {
                name: "t1".into(),
                dims: vec![3],
                ggml_type: 0,
                nbytes: 12,
            });
        assert_eq!(w.data_offsets(), vec![0, 64]);
        assert_eq!(w.data_bytes(), 96);
        let header = w.header_bytes();
        assert_eq!(header.len() % 32, 0);
        let path = std::env::temp_dir().join(format!("hypura-tools-gguf-{}", std::process::id()));
        w.write_file(&path, |_, _| {}).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            header.len() as u64 + 96
        );
        let records = raw_records(&path, "tokenizer.").unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].0, "tokenizer.ggml.tokens");
        let mut expected = Vec::new();
        write_value(
            &mut expected,
            &Value::StrArray(vec!["a".into(), "bc".into()]),
        );
        assert_eq!(records[0].1, expected);
    }
}
