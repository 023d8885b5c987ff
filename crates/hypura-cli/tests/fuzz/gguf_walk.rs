//! A GGUF header walker for the tests, independent of hypura-core: it records the byte position
//! and width of every header field so that tests can overwrite one field in place (the file
//! keeps its length and every other field its position).
//!
//! Layout (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor count, u64 kv
//! count; each kv: u64 key length, key bytes, u32 value type, value; each tensor info: u64 name
//! length, name bytes, u32 n_dims, n_dims x u64 dims, u32 ggml type, u64 offset (relative to the
//! data section); then padding to `general.alignment` (default 32) and the tensor data.
//! Value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string (u64 length +
//! bytes), 9 array (u32 item type, u64 count, items), 10 u64, 11 i64, 12 f64.
#![allow(dead_code)]

/// What a header field is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Magic,
    Version,
    TensorCount,
    KvCount,
    KeyLen,
    KeyBytes,
    ValueType,
    /// A scalar metadata value (`vtype` says which type).
    Scalar,
    /// The length of a string metadata value.
    StrLen,
    StrBytes,
    ArrItemType,
    ArrCount,
    /// A numeric array element (`vtype` says which type, `index` which element).
    ArrElem,
    /// The length field of a string array element.
    ArrStrLen,
    ArrStrBytes,
    TensorNameLen,
    TensorName,
    NDims,
    /// One dimension (`index` says which).
    Dim,
    TensorType,
    TensorOffset,
}

/// One header field.
#[derive(Clone, Debug)]
pub struct Field {
    pub pos: usize,
    pub width: usize,
    pub kind: Kind,
    /// The GGUF value type of a `Scalar` / `ArrElem` (0 otherwise).
    pub vtype: u32,
    /// "header", "kv <key>" or "tensor <name>".
    pub owner: String,
    /// Array element index or dimension index (0 otherwise).
    pub index: u64,
}

impl Field {
    /// A readable name, e.g. `kv llama.block_count value(u32)` or `tensor blk.0.attn_q.weight dim[1]`.
    pub fn name(&self) -> String {
        let what = match self.kind {
            Kind::Magic => "magic".to_string(),
            Kind::Version => "version".to_string(),
            Kind::TensorCount => "tensor count".to_string(),
            Kind::KvCount => "kv count".to_string(),
            Kind::KeyLen => "key length".to_string(),
            Kind::KeyBytes => "key bytes".to_string(),
            Kind::ValueType => "value type".to_string(),
            Kind::Scalar => format!("value({})", vtype_name(self.vtype)),
            Kind::StrLen => "string length".to_string(),
            Kind::StrBytes => "string bytes".to_string(),
            Kind::ArrItemType => "array item type".to_string(),
            Kind::ArrCount => "array count".to_string(),
            Kind::ArrElem => format!("elem[{}]({})", self.index, vtype_name(self.vtype)),
            Kind::ArrStrLen => format!("elem[{}] length", self.index),
            Kind::ArrStrBytes => format!("elem[{}] bytes", self.index),
            Kind::TensorNameLen => "name length".to_string(),
            Kind::TensorName => "name bytes".to_string(),
            Kind::NDims => "n_dims".to_string(),
            Kind::Dim => format!("dim[{}]", self.index),
            Kind::TensorType => "ggml type".to_string(),
            Kind::TensorOffset => "offset".to_string(),
        };
        format!("{} {} @{:#x}/{}", self.owner, what, self.pos, self.width)
    }

    /// Is this a u64 count or length field?
    pub fn is_count(&self) -> bool {
        matches!(
            self.kind,
            Kind::TensorCount
                | Kind::KvCount
                | Kind::KeyLen
                | Kind::StrLen
                | Kind::ArrCount
                | Kind::ArrStrLen
                | Kind::TensorNameLen
        )
    }
}

/// An array value.
#[derive(Clone, Debug)]
pub struct Arr {
    pub item_type: u32,
    pub item_type_pos: usize,
    pub count: u64,
    pub count_pos: usize,
    /// Where the first item starts.
    pub items_pos: usize,
    /// Bytes per item for numeric items.
    pub item_size: Option<usize>,
    /// For arrays of strings: (position of the u64 length field, length) of every element.
    pub strings: Vec<(usize, u64)>,
}

/// One key/value.
#[derive(Clone, Debug)]
pub struct Kv {
    pub index: usize,
    pub key: String,
    pub key_len_pos: usize,
    pub key_pos: usize,
    pub type_pos: usize,
    pub vtype: u32,
    /// Where the value starts (for a string: its length field; for an array: its item type).
    pub value_pos: usize,
    /// Width of a scalar value (0 for strings and arrays).
    pub width: usize,
    /// The value's raw bytes for scalars; the string bytes for strings.
    pub raw: Vec<u8>,
    pub arr: Option<Arr>,
}

impl Kv {
    /// The scalar value as an unsigned integer (sign-extended for signed types).
    pub fn as_u64(&self) -> Option<u64> {
        scalar_u64(self.vtype, &self.raw)
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self.vtype {
            6 => Some(f32::from_le_bytes(self.raw[..4].try_into().unwrap()) as f64),
            12 => Some(f64::from_le_bytes(self.raw[..8].try_into().unwrap())),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<String> {
        (self.vtype == 8).then(|| String::from_utf8_lossy(&self.raw).into_owned())
    }
}

/// One tensor info.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub index: usize,
    pub name: String,
    pub name_len_pos: usize,
    pub name_pos: usize,
    pub n_dims_pos: usize,
    /// (position, value) of each dimension.
    pub dims: Vec<(usize, u64)>,
    pub type_pos: usize,
    pub ggml_type: u32,
    pub offset_pos: usize,
    pub offset: u64,
}

/// Everything the walker found.
#[derive(Clone, Debug)]
pub struct Layout {
    pub version: u32,
    pub tensor_count: u64,
    pub kv_count: u64,
    /// Every field (arrays contribute a sample of their elements).
    pub fields: Vec<Field>,
    pub kvs: Vec<Kv>,
    pub tensors: Vec<Tensor>,
    /// End of the last tensor info.
    pub header_end: usize,
    pub alignment: u64,
    /// Start of the tensor data (header_end rounded up to the alignment).
    pub data_start: usize,
    pub file_len: u64,
}

impl Layout {
    pub fn kv(&self, key: &str) -> Option<&Kv> {
        self.kvs.iter().find(|kv| kv.key == key)
    }

    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn arch(&self) -> String {
        self.kv("general.architecture")
            .and_then(Kv::as_str)
            .unwrap_or_default()
    }
}

pub fn vtype_name(t: u32) -> &'static str {
    match t {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "invalid",
    }
}

/// Bytes of a scalar value type.
pub fn scalar_width(t: u32) -> Option<usize> {
    match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

pub fn is_signed(t: u32) -> bool {
    matches!(t, 1 | 3 | 5 | 11)
}

pub fn is_float(t: u32) -> bool {
    matches!(t, 6 | 12)
}

/// A scalar's raw little-endian bytes as u64 (signed types sign-extended, floats as bits).
pub fn scalar_u64(t: u32, raw: &[u8]) -> Option<u64> {
    let w = scalar_width(t)?;
    let mut b = [0u8; 8];
    b[..w].copy_from_slice(&raw[..w]);
    let v = u64::from_le_bytes(b);
    Some(if is_signed(t) && w < 8 && raw[w - 1] & 0x80 != 0 {
        v | (u64::MAX << (8 * w))
    } else {
        v
    })
}

/// Renders a scalar's raw bytes for a mutation description.
pub fn render_scalar(t: u32, raw: &[u8]) -> String {
    match t {
        6 => format!("{:?}", f32::from_le_bytes(raw[..4].try_into().unwrap())),
        12 => format!("{:?}", f64::from_le_bytes(raw[..8].try_into().unwrap())),
        7 => format!("bool({})", raw[0]),
        _ if is_signed(t) => format!("{}", scalar_u64(t, raw).unwrap_or(0) as i64),
        _ => match scalar_u64(t, raw) {
            Some(v) => format!("{v}"),
            None => format!("{raw:02x?}"),
        },
    }
}

/// Elements of long arrays recorded as fields: the first 8, the last 4 and 52 spread between.
fn sampled(count: u64) -> Vec<u64> {
    if count <= 64 {
        return (0..count).collect();
    }
    let mut v: Vec<u64> = (0..8).collect();
    v.extend((1..=52).map(|i| i * count / 53));
    v.extend(count - 4..count);
    v.dedup();
    v
}

struct Walker<'a> {
    b: &'a [u8],
    pos: usize,
    fields: Vec<Field>,
}

impl Walker<'_> {
    fn need(&self, n: u64, what: &str) -> Result<(), String> {
        if n > (self.b.len() - self.pos) as u64 {
            return Err(format!(
                "{what}: {n} bytes at {:#x} run past the {} bytes read",
                self.pos,
                self.b.len()
            ));
        }
        Ok(())
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        self.need(n as u64, what)?;
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn field(&mut self, pos: usize, width: usize, kind: Kind, vtype: u32, owner: &str, index: u64) {
        self.fields.push(Field {
            pos,
            width,
            kind,
            vtype,
            owner: owner.to_string(),
            index,
        });
    }

    /// A string: (length field position, bytes position, bytes).
    fn string(&mut self, what: &str) -> Result<(usize, usize, Vec<u8>), String> {
        let len_pos = self.pos;
        let len = self.u64(what)?;
        self.need(len, what)?;
        let pos = self.pos;
        let bytes = self.take(len as usize, what)?.to_vec();
        Ok((len_pos, pos, bytes))
    }

    /// A value of type `t` for `owner`; returns (width, raw bytes, array).
    fn value(
        &mut self,
        t: u32,
        owner: &str,
        depth: u32,
    ) -> Result<(usize, Vec<u8>, Option<Arr>), String> {
        if let Some(w) = scalar_width(t) {
            let pos = self.pos;
            let raw = self.take(w, owner)?.to_vec();
            self.field(pos, w, Kind::Scalar, t, owner, 0);
            return Ok((w, raw, None));
        }
        match t {
            8 => {
                let (len_pos, pos, bytes) = self.string(owner)?;
                self.field(len_pos, 8, Kind::StrLen, 8, owner, 0);
                if !bytes.is_empty() {
                    self.field(pos, bytes.len(), Kind::StrBytes, 8, owner, 0);
                }
                Ok((0, bytes, None))
            }
            9 => {
                if depth > 2 {
                    return Err(format!("{owner}: arrays nested too deeply"));
                }
                let item_type_pos = self.pos;
                let item_type = self.u32(owner)?;
                self.field(item_type_pos, 4, Kind::ArrItemType, 0, owner, 0);
                let count_pos = self.pos;
                let count = self.u64(owner)?;
                self.field(count_pos, 8, Kind::ArrCount, 0, owner, 0);
                let items_pos = self.pos;
                let mut arr = Arr {
                    item_type,
                    item_type_pos,
                    count,
                    count_pos,
                    items_pos,
                    item_size: scalar_width(item_type),
                    strings: Vec::new(),
                };
                let sample = sampled(count);
                if let Some(w) = arr.item_size {
                    let total = count
                        .checked_mul(w as u64)
                        .ok_or_else(|| format!("{owner}: array size overflows"))?;
                    self.need(total, owner)?;
                    for &i in &sample {
                        self.field(
                            items_pos + i as usize * w,
                            w,
                            Kind::ArrElem,
                            item_type,
                            owner,
                            i,
                        );
                    }
                    self.pos += total as usize;
                } else if item_type == 8 {
                    if count > self.b.len() as u64 {
                        return Err(format!("{owner}: array of {count} strings"));
                    }
                    let mut next = 0;
                    for i in 0..count {
                        let (len_pos, pos, bytes) = self.string(owner)?;
                        arr.strings.push((len_pos, bytes.len() as u64));
                        if sample.get(next) == Some(&i) {
                            next += 1;
                            self.field(len_pos, 8, Kind::ArrStrLen, 8, owner, i);
                            if !bytes.is_empty() {
                                self.field(pos, bytes.len(), Kind::ArrStrBytes, 8, owner, i);
                            }
                        }
                    }
                } else {
                    if count > self.b.len() as u64 {
                        return Err(format!("{owner}: array of {count} items"));
                    }
                    for _ in 0..count {
                        self.value(item_type, owner, depth + 1)?;
                    }
                }
                Ok((0, Vec::new(), Some(arr)))
            }
            other => Err(format!(
                "{owner}: unknown value type {other} at {:#x}",
                self.pos - 4
            )),
        }
    }
}

/// Walks the header in `b` (a prefix of the file at least as long as the header).
pub fn walk(b: &[u8], file_len: u64) -> Result<Layout, String> {
    let mut w = Walker {
        b,
        pos: 0,
        fields: Vec::new(),
    };
    let magic = w.take(4, "magic")?;
    if magic != b"GGUF" {
        return Err("missing GGUF magic".into());
    }
    w.field(0, 4, Kind::Magic, 0, "header", 0);
    let version = w.u32("version")?;
    w.field(4, 4, Kind::Version, 0, "header", 0);
    if !(2..=3).contains(&version) {
        return Err(format!("GGUF version {version}"));
    }
    let tensor_count = w.u64("tensor count")?;
    w.field(8, 8, Kind::TensorCount, 0, "header", 0);
    let kv_count = w.u64("kv count")?;
    w.field(16, 8, Kind::KvCount, 0, "header", 0);
    if tensor_count > b.len() as u64 || kv_count > b.len() as u64 {
        return Err(format!("{tensor_count} tensors, {kv_count} keys"));
    }
    let mut kvs = Vec::new();
    for index in 0..kv_count as usize {
        let (key_len_pos, key_pos, key) = w.string("key")?;
        let key = String::from_utf8_lossy(&key).into_owned();
        let owner = format!("kv {key}");
        w.field(key_len_pos, 8, Kind::KeyLen, 0, &owner, 0);
        w.field(key_pos, key.len(), Kind::KeyBytes, 0, &owner, 0);
        let type_pos = w.pos;
        let vtype = w.u32(&owner)?;
        w.field(type_pos, 4, Kind::ValueType, 0, &owner, 0);
        let value_pos = w.pos;
        let (width, raw, arr) = w.value(vtype, &owner, 0)?;
        kvs.push(Kv {
            index,
            key,
            key_len_pos,
            key_pos,
            type_pos,
            vtype,
            value_pos,
            width,
            raw,
            arr,
        });
    }
    let alignment = match kvs.iter().find(|kv| kv.key == "general.alignment") {
        Some(kv) => kv
            .as_u64()
            .filter(|a| a.is_power_of_two())
            .ok_or("bad general.alignment")?,
        None => 32,
    };
    let mut tensors = Vec::new();
    for index in 0..tensor_count as usize {
        let (name_len_pos, name_pos, name) = w.string("tensor name")?;
        let name = String::from_utf8_lossy(&name).into_owned();
        let owner = format!("tensor {name}");
        w.field(name_len_pos, 8, Kind::TensorNameLen, 0, &owner, 0);
        w.field(name_pos, name.len(), Kind::TensorName, 0, &owner, 0);
        let n_dims_pos = w.pos;
        let n_dims = w.u32(&owner)?;
        w.field(n_dims_pos, 4, Kind::NDims, 0, &owner, 0);
        if n_dims > 8 {
            return Err(format!("{owner}: {n_dims} dims"));
        }
        let mut dims = Vec::new();
        for d in 0..n_dims {
            let pos = w.pos;
            dims.push((pos, w.u64(&owner)?));
            w.field(pos, 8, Kind::Dim, 0, &owner, d as u64);
        }
        let type_pos = w.pos;
        let ggml_type = w.u32(&owner)?;
        w.field(type_pos, 4, Kind::TensorType, 0, &owner, 0);
        let offset_pos = w.pos;
        let offset = w.u64(&owner)?;
        w.field(offset_pos, 8, Kind::TensorOffset, 0, &owner, 0);
        tensors.push(Tensor {
            index,
            name,
            name_len_pos,
            name_pos,
            n_dims_pos,
            dims,
            type_pos,
            ggml_type,
            offset_pos,
            offset,
        });
    }
    let header_end = w.pos;
    let data_start = (header_end as u64).div_ceil(alignment) * alignment;
    Ok(Layout {
        version,
        tensor_count,
        kv_count,
        fields: w.fields,
        kvs,
        tensors,
        header_end,
        alignment,
        data_start: data_start as usize,
        file_len,
    })
}

/// Reads the header of `path` (and the data section's first bytes) and walks it.
pub fn walk_file(path: &std::path::Path) -> (Vec<u8>, Layout) {
    use std::io::Read;
    let file_len = std::fs::metadata(path).unwrap().len();
    let mut want: u64 = 1 << 20;
    loop {
        let mut buf = Vec::new();
        std::fs::File::open(path)
            .unwrap()
            .take(want.min(file_len))
            .read_to_end(&mut buf)
            .unwrap();
        match walk(&buf, file_len) {
            Ok(layout) => return (buf, layout),
            Err(e) if want >= file_len => panic!("{}: {e}", path.display()),
            Err(_) => want *= 4,
        }
    }
}

/// (elements per block, bytes per block) of the ggml types these models use (and a few more).
pub fn ggml_block(t: u32) -> (u64, u64) {
    match t {
        0 => (1, 4),
        1 | 30 => (1, 2),
        2 => (32, 18),
        3 => (32, 20),
        6 => (32, 22),
        7 => (32, 24),
        8 => (32, 34),
        10 => (256, 84),
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        _ => (256, 256),
    }
}

/// A tensor's size in bytes (for the types in `ggml_block`).
pub fn tensor_bytes(t: &Tensor) -> u64 {
    let (block, bytes) = ggml_block(t.ggml_type);
    let elems: u64 = t.dims.iter().map(|d| d.1).product();
    elems / block * bytes
}
