//! The GGUF header reader: every key/value (arrays decoded on demand), every tensor's name,
//! type, shape, byte size and absolute file offset, and the raw header bytes (the stand-in
//! file llama.cpp's loader is given is a copy of them). It reads from the one handle a load
//! opens, never reads tensor data, never allocates more than the file could hold, and applies
//! the structural rules of llama.cpp's own reader (`gguf.cpp`), so a header it accepts is one
//! llama.cpp accepts too.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::excerpt;
use crate::error::ModelFileError;
use crate::sys;

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// llama.cpp's `GGUF_MAX_STRING_LENGTH`.
const MAX_STRING_BYTES: u64 = 1 << 30;
/// ggml's `GGML_MAX_NAME`: a tensor name must be shorter.
const MAX_TENSOR_NAME_BYTES: usize = 64;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;

/// GGUF value type ids.
pub(crate) mod value_type {
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

/// Bytes of one scalar of `value_type`, or `None` for strings, arrays and unknown types.
fn scalar_bytes(value_type: u32) -> Option<u64> {
    use value_type::*;
    match value_type {
        U8 | I8 | BOOL => Some(1),
        U16 | I16 => Some(2),
        U32 | I32 | F32 => Some(4),
        U64 | I64 | F64 => Some(8),
        _ => None,
    }
}

/// A metadata value. Arrays stay in the raw header bytes and are decoded on demand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MetaValue {
    /// Any unsigned integer type.
    Uint(u64),
    /// Any signed integer type.
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// bool.
    Bool(bool),
    /// A string (lossily decoded).
    Str(String),
    /// An array.
    Array(ArrayRef),
}

/// Where an array's items lie in the raw header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArrayRef {
    /// The items' value type.
    pub item_type: u32,
    /// Item count.
    pub count: u64,
    /// Offset of the first item in [`GgufHeader::raw`].
    start: usize,
}

/// A key's value with its GGUF type id (for arrays, [`value_type::ARRAY`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Meta {
    pub value_type: u32,
    pub value: MetaValue,
}

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorInfo {
    /// Name, e.g. `blk.3.ffn_up.weight` (shorter than 64 bytes; may hold any bytes).
    pub name: String,
    /// ggml type id.
    pub ggml_type: u32,
    /// Dimensions, innermost first (ggml's `ne`); 1 to 4 of them.
    pub dims: Vec<u64>,
    /// Absolute offset of the first byte in the file.
    pub file_offset: u64,
    /// Size in bytes.
    pub nbytes: u64,
}

impl TensorInfo {
    /// Number of rows (product of all dimensions but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product::<u64>().max(1)
    }

    /// Bytes of one row (`dims[0]` elements).
    pub fn row_bytes(&self) -> u64 {
        self.nbytes / self.n_rows()
    }
}

/// The parsed header of a GGUF file.
#[derive(Debug, Clone)]
pub(crate) struct GgufHeader {
    /// Metadata key/values.
    pub meta: HashMap<String, Meta>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// Where tensor data starts (end of the header, aligned).
    pub data_offset: u64,
    /// The file's size in bytes.
    pub file_size: u64,
    /// The header's bytes, `[0, data_offset)`.
    pub raw: Vec<u8>,
}

impl GgufHeader {
    /// Reads and checks the header of `file` (opened from `path`, `file_size` bytes long).
    pub fn read(file: &File, path: &Path, file_size: u64) -> Result<Self, ModelFileError> {
        let mut parser = Parser {
            reader: BufReader::with_capacity(1 << 20, file),
            raw: Vec::new(),
            file_size,
            path,
        };
        parser.parse()
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta.get(key).map(|m| &m.value)
    }

    /// `general.architecture` ("" when absent or not a string).
    pub fn architecture(&self) -> &str {
        match self.get("general.architecture") {
            Some(MetaValue::Str(arch)) => arch,
            _ => "",
        }
    }

    /// An integer metadata value (any integer type).
    pub fn get_int(&self, key: &str) -> Option<i128> {
        match self.get(key)? {
            MetaValue::Uint(v) => Some(i128::from(*v)),
            MetaValue::Int(v) => Some(i128::from(*v)),
            _ => None,
        }
    }

    /// A floating-point metadata value.
    pub fn get_float(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            MetaValue::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// An array's items as raw strings (empty when it is not an array of strings).
    pub fn strings<'a>(&'a self, array: &ArrayRef) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut pos = array.start;
        let count = if array.item_type == value_type::STRING {
            array.count
        } else {
            0
        };
        (0..count).map_while(move |_| {
            let len = u64::from_le_bytes(self.raw.get(pos..pos + 8)?.try_into().ok()?) as usize;
            let item = self.raw.get(pos + 8..pos + 8 + len)?;
            pos += 8 + len;
            Some(item)
        })
    }

    /// An array of integers or floats, as f64 (empty for other item types).
    pub fn numbers(&self, array: &ArrayRef) -> Vec<f64> {
        let Some(size) = scalar_bytes(array.item_type) else {
            return Vec::new();
        };
        let size = size as usize;
        (0..array.count as usize)
            .map_while(|i| {
                let at = array.start + i * size;
                let b = self.raw.get(at..at + size)?;
                Some(decode_number(array.item_type, b))
            })
            .collect()
    }
}

fn decode_number(value_type: u32, b: &[u8]) -> f64 {
    use value_type::*;
    let mut a = [0u8; 8];
    a[..b.len()].copy_from_slice(b);
    match value_type {
        U8 | BOOL => f64::from(b[0]),
        I8 => f64::from(b[0] as i8),
        U16 => f64::from(u16::from_le_bytes([b[0], b[1]])),
        I16 => f64::from(i16::from_le_bytes([b[0], b[1]])),
        U32 => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        I32 => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        F32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        U64 => u64::from_le_bytes(a) as f64,
        I64 => i64::from_le_bytes(a) as f64,
        _ => f64::from_le_bytes(a),
    }
}

/// ggml's name for a type id, or `type<N>` when ggml does not know it.
pub(crate) fn type_name(ggml_type: u32) -> String {
    if ggml_type_bytes(ggml_type).is_none() {
        return format!("type{ggml_type}");
    }
    // SAFETY: the id was checked to be a live ggml type; ggml_type_name returns a static,
    // NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(sys::ggml_type_name(ggml_type)) }
        .to_string_lossy()
        .into_owned()
}

/// (block size in elements, bytes per block) for a type id ggml supports.
pub(crate) fn ggml_type_bytes(ggml_type: u32) -> Option<(u64, u64)> {
    if ggml_type >= sys::GGML_TYPE_COUNT {
        return None;
    }
    // SAFETY: the id is below GGML_TYPE_COUNT, so it indexes ggml's type-traits table.
    let (block, size) = unsafe {
        (
            sys::ggml_blck_size(ggml_type),
            sys::ggml_type_size(ggml_type),
        )
    };
    if block <= 0 || size == 0 {
        return None; // a removed type id
    }
    Some((block as u64, size as u64))
}

struct Parser<'a> {
    reader: BufReader<&'a File>,
    raw: Vec<u8>,
    file_size: u64,
    path: &'a Path,
}

impl Parser<'_> {
    fn bad(&self, reason: impl Into<String>) -> ModelFileError {
        ModelFileError::Malformed {
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn pos(&self) -> u64 {
        self.raw.len() as u64
    }

    /// Reads `n` more header bytes (kept in `raw`); returns where they start.
    fn bytes(&mut self, n: u64) -> Result<usize, ModelFileError> {
        if n > self.file_size.saturating_sub(self.pos()) {
            return Err(self.bad(format!(
                "the header claims {n} bytes at offset {} but the file ends at {}",
                self.pos(),
                self.file_size
            )));
        }
        let start = self.raw.len();
        let got = (&mut self.reader)
            .take(n)
            .read_to_end(&mut self.raw)
            .map_err(|source| ModelFileError::Unreadable {
                path: self.path.to_path_buf(),
                source,
            })?;
        if got as u64 != n {
            return Err(self.bad("unexpected end of file in the header"));
        }
        Ok(start)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ModelFileError> {
        let start = self.bytes(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.raw[start..start + N]);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, ModelFileError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ModelFileError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A string's bytes (kept raw: keys and names may hold anything).
    fn string(&mut self) -> Result<Vec<u8>, ModelFileError> {
        let len = self.u64()?;
        if len > MAX_STRING_BYTES {
            return Err(self.bad(format!("a string of {len} bytes")));
        }
        let start = self.bytes(len)?;
        Ok(self.raw[start..].to_vec())
    }

    fn scalar(&mut self, value_type: u32) -> Result<MetaValue, ModelFileError> {
        use value_type::*;
        Ok(match value_type {
            U8 => MetaValue::Uint(u64::from(self.array::<1>()?[0])),
            I8 => MetaValue::Int(i64::from(self.array::<1>()?[0] as i8)),
            U16 => MetaValue::Uint(u64::from(u16::from_le_bytes(self.array()?))),
            I16 => MetaValue::Int(i64::from(i16::from_le_bytes(self.array()?))),
            U32 => MetaValue::Uint(u64::from(self.u32()?)),
            I32 => MetaValue::Int(i64::from(i32::from_le_bytes(self.array()?))),
            F32 => MetaValue::Float(f64::from(f32::from_le_bytes(self.array()?))),
            BOOL => MetaValue::Bool(self.array::<1>()?[0] != 0),
            STRING => MetaValue::Str(String::from_utf8_lossy(&self.string()?).into_owned()),
            U64 => MetaValue::Uint(self.u64()?),
            I64 => MetaValue::Int(i64::from_le_bytes(self.array()?)),
            F64 => MetaValue::Float(f64::from_le_bytes(self.array()?)),
            other => return Err(self.bad(format!("unknown metadata value type {other}"))),
        })
    }

    fn value(&mut self, value_type: u32, key: &str) -> Result<MetaValue, ModelFileError> {
        if value_type != value_type::ARRAY {
            return self.scalar(value_type);
        }
        let item_type = self.u32()?;
        let count = self.u64()?;
        let start = self.raw.len();
        if let Some(size) = scalar_bytes(item_type) {
            let total = count
                .checked_mul(size)
                .ok_or_else(|| self.bad(format!("array {} is too large", excerpt(key))))?;
            self.bytes(total)?;
        } else if item_type == value_type::STRING {
            // Each string takes at least its 8-byte length.
            if count > self.file_size.saturating_sub(self.pos()) / 8 {
                return Err(self.bad(format!(
                    "array {} claims {count} strings, more than the file could hold",
                    excerpt(key)
                )));
            }
            for _ in 0..count {
                self.string()?;
            }
        } else {
            return Err(self.bad(format!(
                "array {} has invalid item type {item_type}",
                excerpt(key)
            )));
        }
        Ok(MetaValue::Array(ArrayRef {
            item_type,
            count,
            start,
        }))
    }

    fn parse(&mut self) -> Result<GgufHeader, ModelFileError> {
        if self.file_size < 24 {
            return Err(self.bad(format!("the file is only {} bytes", self.file_size)));
        }
        let magic = self.array::<4>()?;
        if &magic != GGUF_MAGIC {
            return Err(self.bad("missing GGUF magic"));
        }
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            return Err(self.bad(format!("unsupported GGUF version {version}")));
        }
        let n_tensors = self.u64()?;
        let n_kv = self.u64()?;
        // Each tensor info and key/value takes well over 8 bytes.
        if n_tensors > self.file_size / 8 || n_kv > self.file_size / 8 {
            return Err(self.bad(format!(
                "the header claims {n_tensors} tensors and {n_kv} keys, more than the file could hold"
            )));
        }
        let mut meta = HashMap::new();
        for _ in 0..n_kv {
            let key_bytes = self.string()?;
            let key = String::from_utf8_lossy(&key_bytes).into_owned();
            if key.is_empty() {
                return Err(self.bad("a metadata key is empty"));
            }
            let value_type = self.u32()?;
            let value = self.value(value_type, &key)?;
            if meta.contains_key(&key) {
                return Err(self.bad(format!("duplicate metadata key {}", excerpt(&key))));
            }
            meta.insert(key, Meta { value_type, value });
        }
        let alignment = match meta.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(Meta {
                value_type: value_type::U32,
                value: MetaValue::Uint(a),
            }) if *a > 0 && a.is_power_of_two() => *a,
            Some(other) => {
                return Err(self.bad(format!(
                    "general.alignment must be a power of two of type uint32, not {:?}",
                    other.value
                )))
            }
        };
        let mut names = HashSet::new();
        let mut raw_tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name_bytes = self.string()?;
            let name = String::from_utf8_lossy(&name_bytes).into_owned();
            if name_bytes.len() >= MAX_TENSOR_NAME_BYTES {
                return Err(self.bad(format!(
                    "tensor name {} is {} bytes long (at most {})",
                    excerpt(&name),
                    name_bytes.len(),
                    MAX_TENSOR_NAME_BYTES - 1
                )));
            }
            if !names.insert(name_bytes) {
                return Err(self.bad(format!("duplicate tensor name {}", excerpt(&name))));
            }
            let n_dims = self.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(self.bad(format!("tensor {} has {n_dims} dimensions", excerpt(&name))));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(self.u64()?);
            }
            let ggml_type = self.u32()?;
            let offset = self.u64()?;
            raw_tensors.push((name, dims, ggml_type, offset));
        }
        let data_offset = self.pos().div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw_tensors.len());
        let mut expected_offset = 0u64;
        for (name, dims, ggml_type, offset) in raw_tensors {
            let shown = excerpt(&name);
            let (block, block_bytes) = ggml_type_bytes(ggml_type)
                .ok_or_else(|| self.bad(format!("tensor {shown} has unknown type {ggml_type}")))?;
            // ggml counts elements in int64_t.
            let elements = dims
                .iter()
                .try_fold(1u64, |acc, d| acc.checked_mul(*d))
                .filter(|e| *e > 0 && *e <= i64::MAX as u64)
                .ok_or_else(|| self.bad(format!("tensor {shown} has invalid shape {dims:?}")))?;
            if dims[0] % block != 0 {
                return Err(self.bad(format!(
                    "tensor {shown}: a row of {} elements is not a multiple of the block size {block}",
                    dims[0]
                )));
            }
            let nbytes = (elements / block)
                .checked_mul(block_bytes)
                .ok_or_else(|| self.bad(format!("tensor {shown}: its size overflows")))?;
            // llama.cpp's reader: each tensor follows the previous one, padded to the alignment.
            if offset != expected_offset {
                return Err(self.bad(format!(
                    "tensor {shown} is at data offset {offset}, expected {expected_offset}"
                )));
            }
            expected_offset = nbytes
                .checked_next_multiple_of(alignment)
                .and_then(|padded| expected_offset.checked_add(padded))
                .ok_or_else(|| self.bad(format!("tensor {shown}: its size overflows")))?;
            let file_offset = data_offset
                .checked_add(offset)
                .ok_or_else(|| self.bad(format!("tensor {shown}: its offset overflows")))?;
            let end = file_offset.saturating_add(nbytes);
            if end > self.file_size {
                return Err(ModelFileError::Truncated {
                    path: self.path.to_path_buf(),
                    tensor: shown,
                    needed: end,
                    actual: self.file_size,
                });
            }
            tensors.push(TensorInfo {
                name,
                ggml_type,
                dims,
                file_offset,
                nbytes,
            });
        }
        // The padding up to the data section is part of the stand-in's header.
        if !tensors.is_empty() {
            let pad = data_offset - self.pos();
            self.bytes(pad)?;
        }
        Ok(GgufHeader {
            meta,
            tensors,
            data_offset,
            file_size: self.file_size,
            raw: std::mem::take(&mut self.raw),
        })
    }
}
