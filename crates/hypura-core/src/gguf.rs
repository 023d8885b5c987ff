//! A small, defensive GGUF header reader: metadata keys hypura needs and every tensor's name,
//! type, shape, byte size and absolute file offset. It never reads tensor data, never allocates
//! more than the file could hold, and reports a malformed or truncated file as an error.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{HypuraError, Result};
use crate::sys;

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// No real GGUF string (a key, a token) is anywhere near this long.
const MAX_STRING_BYTES: u64 = 1 << 24;

/// A metadata value; arrays keep only their element count (hypura needs none of their items).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// Any unsigned integer type.
    Uint(u64),
    /// Any signed integer type.
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// bool.
    Bool(bool),
    /// A UTF-8 string (lossily decoded).
    Str(String),
    /// An array, with its element count.
    Array(u64),
}

/// One tensor as the header describes it.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Name, e.g. `blk.3.ffn_up.weight`.
    pub name: String,
    /// ggml type id.
    pub ggml_type: u32,
    /// Dimensions, innermost first (ggml's `ne`).
    pub dims: Vec<u64>,
    /// Absolute offset of the first byte in the file.
    pub file_offset: u64,
    /// Size in bytes.
    pub nbytes: u64,
}

impl TensorInfo {
    /// Bytes of one row (`dims[0]` elements).
    pub fn row_bytes(&self) -> u64 {
        let rows = self.dims.iter().skip(1).product::<u64>().max(1);
        self.nbytes / rows
    }

    /// Number of rows (product of all dimensions but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product::<u64>().max(1)
    }

    /// ggml's name of the type (e.g. `q4_0`).
    pub fn type_name(&self) -> String {
        type_name(self.ggml_type)
    }
}

/// The parsed header of a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    /// The file it came from.
    pub path: PathBuf,
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata key/values.
    pub meta: HashMap<String, MetaValue>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// Where tensor data starts (end of the header, aligned).
    pub data_offset: u64,
    /// The file's size in bytes.
    pub file_size: u64,
}

impl GgufHeader {
    /// Reads and validates the header of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(HypuraError::NotFound(path.to_path_buf()));
        }
        let unreadable = |source| HypuraError::Unreadable {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if meta.is_dir() {
            return Err(unreadable(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory",
            )));
        }
        let file_size = meta.len();
        let mut parser = Parser {
            reader: BufReader::with_capacity(1 << 20, file),
            pos: 0,
            file_size,
            path,
        };
        parser.parse()
    }

    /// The `general.architecture` value.
    pub fn architecture(&self) -> Option<&str> {
        match self.meta.get("general.architecture") {
            Some(MetaValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// An unsigned integer metadata value.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        match self.meta.get(key)? {
            MetaValue::Uint(v) => Some(*v),
            MetaValue::Int(v) if *v >= 0 => Some(*v as u64),
            _ => None,
        }
    }

    /// A floating-point metadata value.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        match self.meta.get(key)? {
            MetaValue::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// Sum of all tensors' bytes.
    pub fn weight_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.nbytes).sum()
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// ggml's name for a type id, or `type<N>` when ggml does not know it.
pub fn type_name(ggml_type: u32) -> String {
    if ggml_type_bytes(ggml_type).is_none() {
        return format!("type{ggml_type}");
    }
    // SAFETY: the id was checked to be a live ggml type; ggml_type_name returns a static string.
    unsafe { std::ffi::CStr::from_ptr(sys::ggml_type_name(ggml_type)) }
        .to_string_lossy()
        .into_owned()
}

/// (block size in elements, bytes per block) for a type id ggml supports.
fn ggml_type_bytes(ggml_type: u32) -> Option<(u64, u64)> {
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
    reader: BufReader<File>,
    pos: u64,
    file_size: u64,
    path: &'a Path,
}

impl Parser<'_> {
    fn bad(&self, reason: impl Into<String>) -> HypuraError {
        HypuraError::NotGguf {
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        if n > self.file_size.saturating_sub(self.pos) {
            return Err(self.bad(format!(
                "header claims {n} bytes at offset {} but the file ends at {}",
                self.pos, self.file_size
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.reader.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.bad("unexpected end of file in header")
            } else {
                HypuraError::Unreadable {
                    path: self.path.to_path_buf(),
                    source: e,
                }
            }
        })?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let v = self.bytes(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        if len > MAX_STRING_BYTES {
            return Err(self.bad(format!("string of {len} bytes in header")));
        }
        Ok(String::from_utf8_lossy(&self.bytes(len)?).into_owned())
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        if n > self.file_size.saturating_sub(self.pos) {
            return Err(self.bad("array runs past the end of the file"));
        }
        self.reader
            .seek(SeekFrom::Current(n as i64))
            .map_err(|e| HypuraError::Unreadable {
                path: self.path.to_path_buf(),
                source: e,
            })?;
        self.pos += n;
        Ok(())
    }

    fn scalar_size(value_type: u32) -> Option<u64> {
        match value_type {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        }
    }

    fn value(&mut self, value_type: u32, depth: u32) -> Result<MetaValue> {
        Ok(match value_type {
            0 => MetaValue::Uint(self.array::<1>()?[0] as u64),
            1 => MetaValue::Int(self.array::<1>()?[0] as i8 as i64),
            2 => MetaValue::Uint(u16::from_le_bytes(self.array()?) as u64),
            3 => MetaValue::Int(i16::from_le_bytes(self.array()?) as i64),
            4 => MetaValue::Uint(self.u32()? as u64),
            5 => MetaValue::Int(i32::from_le_bytes(self.array()?) as i64),
            6 => MetaValue::Float(f32::from_le_bytes(self.array()?) as f64),
            7 => MetaValue::Bool(self.array::<1>()?[0] != 0),
            8 => MetaValue::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(self.bad("arrays nested too deeply"));
                }
                let item_type = self.u32()?;
                let count = self.u64()?;
                if let Some(size) = Self::scalar_size(item_type) {
                    let total = count
                        .checked_mul(size)
                        .ok_or_else(|| self.bad("array size overflows"))?;
                    self.skip(total)?;
                } else {
                    if count > self.file_size {
                        return Err(self.bad(format!("array of {count} items")));
                    }
                    for _ in 0..count {
                        self.value(item_type, depth + 1)?;
                    }
                }
                MetaValue::Array(count)
            }
            10 => MetaValue::Uint(self.u64()?),
            11 => MetaValue::Int(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.array()?)),
            other => return Err(self.bad(format!("unknown metadata value type {other}"))),
        })
    }

    fn parse(&mut self) -> Result<GgufHeader> {
        if self.file_size < 24 {
            return Err(self.bad(format!("file is only {} bytes", self.file_size)));
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
                "header claims {n_tensors} tensors and {n_kv} keys, more than the file could hold"
            )));
        }
        let mut meta = HashMap::new();
        for _ in 0..n_kv {
            let key = self.string()?;
            let value_type = self.u32()?;
            let value = self.value(value_type, 0)?;
            meta.insert(key, value);
        }
        let alignment = match meta.get("general.alignment") {
            Some(MetaValue::Uint(a)) if *a > 0 && a.is_power_of_two() => *a,
            None => DEFAULT_ALIGNMENT,
            Some(other) => return Err(self.bad(format!("invalid general.alignment {other:?}"))),
        };
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = self.string()?;
            let n_dims = self.u32()?;
            if n_dims == 0 || n_dims > 4 {
                return Err(self.bad(format!("tensor '{name}' has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(self.u64()?);
            }
            let ggml_type = self.u32()?;
            let offset = self.u64()?;
            raw.push((name, dims, ggml_type, offset));
        }
        let data_offset = self.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, ggml_type, offset) in raw {
            let (block, block_bytes) = ggml_type_bytes(ggml_type)
                .ok_or_else(|| self.bad(format!("tensor '{name}' has unknown type {ggml_type}")))?;
            let elements = dims
                .iter()
                .try_fold(1u64, |acc, d| acc.checked_mul(*d))
                .filter(|e| *e > 0)
                .ok_or_else(|| self.bad(format!("tensor '{name}' has invalid shape {dims:?}")))?;
            if dims[0] % block != 0 {
                return Err(self.bad(format!(
                    "tensor '{name}': row of {} elements is not a multiple of the block size {block}",
                    dims[0]
                )));
            }
            let nbytes = (elements / block)
                .checked_mul(block_bytes)
                .ok_or_else(|| self.bad(format!("tensor '{name}' size overflows")))?;
            let file_offset = data_offset
                .checked_add(offset)
                .ok_or_else(|| self.bad(format!("tensor '{name}' offset overflows")))?;
            let end = file_offset.saturating_add(nbytes);
            if end > self.file_size {
                return Err(HypuraError::Truncated {
                    path: self.path.to_path_buf(),
                    tensor: name,
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
        Ok(GgufHeader {
            path: self.path.to_path_buf(),
            version,
            meta,
            tensors,
            data_offset,
            file_size: self.file_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(n_tensors: u64, dims: &[u64], ggml_type: u32, data: usize) -> Vec<u8> {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, t: &str| {
            b.extend_from_slice(&(t.len() as u64).to_le_bytes());
            b.extend_from_slice(t.as_bytes());
        };
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&n_tensors.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        s(&mut b, "general.architecture");
        b.extend_from_slice(&8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "llama.block_count");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        for i in 0..n_tensors {
            s(&mut b, &format!("t{i}"));
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&ggml_type.to_le_bytes());
            b.extend_from_slice(&(i * 128).to_le_bytes());
        }
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.resize(b.len() + data, 0);
        b
    }

    fn parse(bytes: &[u8]) -> Result<GgufHeader> {
        // Tests run in parallel threads: each file gets its own name.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "hypura-gguf-unit-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        let r = GgufHeader::open(&path);
        std::fs::remove_file(&path).unwrap();
        r
    }

    #[test]
    fn reads_tensors_and_metadata() {
        let h = parse(&header_bytes(2, &[32, 1], 0, 256)).unwrap();
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.get_u64("llama.block_count"), Some(1));
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[0].nbytes, 128);
        assert_eq!(h.tensors[1].file_offset, h.data_offset + 128);
        assert_eq!(h.data_offset % 32, 0);
    }

    #[test]
    fn rejects_corruption_with_an_error() {
        let good = header_bytes(2, &[32, 1], 0, 256);
        assert!(matches!(
            parse(&good[..good.len() - 200]),
            Err(HypuraError::Truncated { .. })
        ));
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(matches!(
            parse(&bad_magic),
            Err(HypuraError::NotGguf { .. })
        ));
        assert!(matches!(
            parse(&header_bytes(1, &[32, 1], 999, 256)),
            Err(HypuraError::NotGguf { .. })
        ));
        assert!(matches!(
            parse(&header_bytes(1, &[31, 1], 2, 256)),
            Err(HypuraError::NotGguf { .. })
        ));
        // a huge claimed tensor count must not allocate
        let mut huge = good.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse(&huge), Err(HypuraError::NotGguf { .. })));
        // every prefix fails cleanly
        for cut in (0..good.len() - 256).step_by(7) {
            assert!(parse(&good[..cut]).is_err(), "prefix {cut} parsed");
        }
    }
}
