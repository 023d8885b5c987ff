//! Seeded mutations of a GGUF header. Every mutation overwrites fields in place (the header
//! keeps its length), except truncation and appending, which change the file's end.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::gguf_walk::{
    ggml_block, is_float, is_signed, render_scalar, scalar_u64, scalar_width, Field, Kind, Layout,
};
use super::harness::printable;

/// splitmix64: a tiny, well-mixed, seedable generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// Mixes a base seed with a stream tag and an index into one case seed.
pub fn case_seed(base: u64, tag: u64, index: u64) -> u64 {
    let mut r = Rng::new(base ^ tag.rotate_left(48) ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    r.next();
    r.next()
}

/// How the file's end changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    Keep,
    Truncate(u64),
    Append(Vec<u8>),
}

/// A mutated header plus how the file ends.
#[derive(Clone, Debug)]
pub struct Mutant {
    /// The header bytes (up to the data section), mutated.
    pub header: Vec<u8>,
    pub tail: Tail,
    /// One line per mutation applied: field, old value, new value.
    pub desc: Vec<String>,
    /// The original file's length.
    pub file_len: u64,
}

impl Mutant {
    pub fn new(header: &[u8], file_len: u64) -> Self {
        Mutant {
            header: header.to_vec(),
            tail: Tail::Keep,
            desc: Vec::new(),
            file_len,
        }
    }

    pub fn describe(&self) -> String {
        self.desc.join("; ")
    }

    pub fn len(&self) -> u64 {
        match &self.tail {
            Tail::Keep => self.file_len,
            Tail::Truncate(n) => *n,
            Tail::Append(b) => self.file_len + b.len() as u64,
        }
    }

    /// Writes the mutant as a sparse file: the header, then a hole up to the file's length
    /// (enough for `plan`, which reads only the header).
    pub fn write_sparse(&self, path: &Path) -> std::io::Result<()> {
        let mut f = File::create(path)?;
        match &self.tail {
            Tail::Truncate(n) if *n <= self.header.len() as u64 => {
                f.write_all(&self.header[..*n as usize])?;
            }
            Tail::Truncate(n) => {
                f.write_all(&self.header)?;
                f.set_len(*n)?;
            }
            Tail::Keep => {
                f.write_all(&self.header)?;
                f.set_len(self.file_len)?;
            }
            Tail::Append(b) => {
                f.write_all(&self.header)?;
                f.set_len(self.file_len)?;
                f.write_all_at(b, self.file_len)?;
            }
        }
        Ok(())
    }

    /// Writes the mutant as a full copy of `source` with the header overwritten in place.
    pub fn write_full(&self, source: &Path, path: &Path) -> std::io::Result<()> {
        std::fs::copy(source, path)?;
        let f = OpenOptions::new().write(true).open(path)?;
        f.write_all_at(&self.header, 0)?;
        match &self.tail {
            Tail::Keep => {}
            Tail::Truncate(n) => f.set_len(*n)?,
            Tail::Append(b) => f.write_all_at(b, self.file_len)?,
        }
        Ok(())
    }

    fn get(&self, pos: usize, width: usize) -> Vec<u8> {
        self.header[pos..pos + width].to_vec()
    }

    fn put(&mut self, pos: usize, bytes: &[u8]) {
        self.header[pos..pos + bytes.len()].copy_from_slice(bytes);
    }

    fn u64_at(&self, pos: usize) -> u64 {
        u64::from_le_bytes(self.header[pos..pos + 8].try_into().unwrap())
    }

    fn u32_at(&self, pos: usize) -> u32 {
        u32::from_le_bytes(self.header[pos..pos + 4].try_into().unwrap())
    }

    /// Sets a u64 field and records it.
    fn set_u64(&mut self, pos: usize, new: u64, what: &str) {
        let old = self.u64_at(pos);
        self.put(pos, &new.to_le_bytes());
        self.desc.push(format!("{what}: {old} -> {new} ({new:#x})"));
    }

    /// Sets a u32 field and records it.
    fn set_u32(&mut self, pos: usize, new: u32, what: &str) {
        let old = self.u32_at(pos);
        self.put(pos, &new.to_le_bytes());
        self.desc.push(format!("{what}: {old} -> {new} ({new:#x})"));
    }

    /// Sets a scalar of GGUF type `vtype` (raw little-endian bytes) and records it.
    fn set_scalar(&mut self, pos: usize, vtype: u32, new: &[u8], what: &str) {
        let w = scalar_width(vtype).unwrap();
        let old = self.get(pos, w);
        self.put(pos, &new[..w]);
        self.desc.push(format!(
            "{what}: {} -> {}",
            render_scalar(vtype, &old),
            render_scalar(vtype, &new[..w])
        ));
    }

    /// Overwrites bytes (a string's contents) and records it.
    fn set_bytes(&mut self, pos: usize, new: &[u8], what: &str) {
        let old = self.get(pos, new.len());
        self.put(pos, new);
        self.desc.push(format!(
            "{what}: '{}' -> '{}'",
            printable(&old, 60),
            printable(new, 60)
        ));
    }
}

/// The mutation operators, with their weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Count,
    Value,
    TypeField,
    Tensor,
    DupToken,
    SpecialId,
    BlockCount,
    HeadCount,
    Hparam,
    RenameKey,
    StrBytes,
    Flip,
    Truncate,
    Append,
    MagicVersion,
}

pub const OPS: &[(Op, u64)] = &[
    (Op::Count, 10),
    (Op::Value, 12),
    (Op::TypeField, 7),
    (Op::Tensor, 16),
    (Op::DupToken, 6),
    (Op::SpecialId, 6),
    (Op::BlockCount, 5),
    (Op::HeadCount, 5),
    (Op::Hparam, 5),
    (Op::RenameKey, 4),
    (Op::StrBytes, 5),
    (Op::Flip, 8),
    (Op::Truncate, 5),
    (Op::Append, 3),
    (Op::MagicVersion, 2),
];

/// The weights for `run` candidates: more of what only llama.cpp's loader and the graph read
/// (hyperparameters, head counts, the vocabulary, special tokens, tensor types and shapes),
/// fewer structural breaks (which `plan` cases cover, and which stop before llama.cpp).
pub const RUN_OPS: &[(Op, u64)] = &[
    (Op::Count, 4),
    (Op::Value, 12),
    (Op::TypeField, 3),
    (Op::Tensor, 14),
    (Op::DupToken, 8),
    (Op::SpecialId, 10),
    (Op::BlockCount, 5),
    (Op::HeadCount, 10),
    (Op::Hparam, 14),
    (Op::RenameKey, 5),
    (Op::StrBytes, 6),
    (Op::Flip, 4),
    (Op::Truncate, 3),
    (Op::Append, 2),
    (Op::MagicVersion, 1),
];

fn pick_op(rng: &mut Rng, ops: &[(Op, u64)]) -> Op {
    let total: u64 = ops.iter().map(|o| o.1).sum();
    let mut x = rng.below(total);
    for &(op, w) in ops {
        if x < w {
            return op;
        }
        x -= w;
    }
    unreachable!()
}

/// A mutant of the header `orig` (the file's bytes up to `layout.data_start`): usually one
/// mutation, sometimes two or three.
pub fn mutate(layout: &Layout, orig: &[u8], rng: &mut Rng) -> Mutant {
    mutate_with(layout, orig, rng, OPS)
}

/// `mutate` with other operator weights.
pub fn mutate_with(layout: &Layout, orig: &[u8], rng: &mut Rng, ops: &[(Op, u64)]) -> Mutant {
    let mut m = Mutant::new(&orig[..layout.data_start], layout.file_len);
    let n = match rng.below(100) {
        0..=77 => 1,
        78..=92 => 2,
        _ => 3,
    };
    let mut applied = 0;
    let mut tries = 0;
    while applied < n && tries < 100 {
        tries += 1;
        let op = pick_op(rng, ops);
        if matches!(op, Op::Truncate | Op::Append) && m.tail != Tail::Keep {
            continue;
        }
        if apply(op, layout, &mut m, rng) {
            applied += 1;
        }
    }
    m
}

/// Applies one operator; false when it does not apply to this model.
pub fn apply(op: Op, l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    match op {
        Op::Count => op_count(l, m, rng),
        Op::Value => op_value(l, m, rng),
        Op::TypeField => op_type_field(l, m, rng),
        Op::Tensor => op_tensor(l, m, rng),
        Op::DupToken => op_dup_token(l, m, rng),
        Op::SpecialId => op_special_id(l, m, rng),
        Op::BlockCount => op_block_count(l, m, rng),
        Op::HeadCount => op_head_count(l, m, rng),
        Op::Hparam => op_hparam(l, m, rng),
        Op::RenameKey => op_rename_key(l, m, rng),
        Op::StrBytes => op_str_bytes(l, m, rng),
        Op::Flip => op_flip(l, m, rng),
        Op::Truncate => op_truncate(l, m, rng),
        Op::Append => op_append(m, rng),
        Op::MagicVersion => op_magic_version(m, rng),
    }
}

/// A boundary value for a u64 count or length that was `old`.
pub fn boundary_u64(rng: &mut Rng, old: u64) -> u64 {
    for _ in 0..4 {
        let v = match rng.below(15) {
            0 => 0,
            1 => 1,
            2 => old.wrapping_sub(1),
            3 => old.wrapping_add(1),
            4 => old.wrapping_add(2 + rng.below(15)),
            5 => old.wrapping_sub(2 + rng.below(15)),
            6 => 1 << 31,
            7 => u32::MAX as u64,
            8 => 1 << 32,
            9 => 1 << 63,
            10 => u64::MAX,
            11 => rng.next(),
            12 => rng.below(1 << 20),
            13 => old.wrapping_mul(2),
            _ => (1 << 24) - 1,
        };
        if v != old {
            return v;
        }
    }
    old ^ 1
}

/// An integer for a field that was `old`, as u64 bits (truncated to the field's width later).
pub fn int_value(rng: &mut Rng, old: u64) -> u64 {
    match rng.below(17) {
        0 => 0,
        1 => 1,
        2 => u64::MAX, // -1
        3 => i32::MAX as u64,
        4 => i32::MIN as i64 as u64,
        5 => u32::MAX as u64,
        6 => u64::MAX >> 1,
        7 => 1 << 63,
        8 => 1000,
        9 => 1 << 31,
        10 => old.wrapping_add(1),
        11 => old.wrapping_sub(1),
        12 => old.wrapping_mul(2),
        13 => rng.below(1 << 16),
        14 => 0xffff,
        15 => 0x7fff,
        _ => rng.next(),
    }
}

pub fn float_value(rng: &mut Rng, old: f64) -> f64 {
    match rng.below(13) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => -1.0,
        4 => 0.0,
        5 => 1e30,
        6 => 1e-45,
        7 => f32::MIN_POSITIVE as f64,
        8 => -0.0,
        9 => f32::MAX as f64,
        10 => old * 1000.0,
        11 => -old,
        _ => 1.0,
    }
}

/// New raw bytes for a scalar of type `vtype` whose raw bytes were `old`.
pub fn scalar_value(rng: &mut Rng, vtype: u32, old: &[u8]) -> Vec<u8> {
    if is_float(vtype) {
        let oldf = match vtype {
            6 => f32::from_le_bytes(old[..4].try_into().unwrap()) as f64,
            _ => f64::from_le_bytes(old[..8].try_into().unwrap()),
        };
        let v = float_value(rng, oldf);
        return match vtype {
            6 => (v as f32).to_le_bytes().to_vec(),
            _ => v.to_le_bytes().to_vec(),
        };
    }
    if vtype == 7 {
        return vec![*rng.pick(&[0u8, 1, 2, 0x80, 0xff])];
    }
    let oldv = scalar_u64(vtype, old).unwrap_or(0);
    int_value(rng, oldv).to_le_bytes().to_vec()
}

fn pick_field<'a>(
    l: &'a Layout,
    rng: &mut Rng,
    pred: impl Fn(&Field) -> bool,
) -> Option<&'a Field> {
    let v: Vec<&Field> = l.fields.iter().filter(|f| pred(f)).collect();
    if v.is_empty() {
        None
    } else {
        Some(*rng.pick(&v))
    }
}

fn op_count(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    let f = match rng.below(100) {
        0..=24 => pick_field(l, rng, |f| {
            matches!(f.kind, Kind::TensorCount | Kind::KvCount)
        }),
        25..=49 => pick_field(l, rng, |f| f.kind == Kind::ArrCount),
        _ => pick_field(l, rng, |f| f.is_count()),
    };
    let Some(f) = f else { return false };
    let new = boundary_u64(rng, m.u64_at(f.pos));
    m.set_u64(f.pos, new, &f.name());
    true
}

fn op_value(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    let f = if rng.chance(70) {
        pick_field(l, rng, |f| f.kind == Kind::Scalar)
    } else {
        pick_field(l, rng, |f| f.kind == Kind::ArrElem)
    };
    let Some(f) = f else { return false };
    let new = scalar_value(rng, f.vtype, &m.get(f.pos, f.width));
    m.set_scalar(f.pos, f.vtype, &new, &f.name());
    true
}

fn type_id(rng: &mut Rng, old: u32, valid_max: u32) -> u32 {
    for _ in 0..4 {
        let v = match rng.below(10) {
            0..=5 => rng.below(valid_max as u64 + 1) as u32,
            6 => valid_max + 1 + rng.below(4) as u32,
            7 => *rng.pick(&[255, 256, 0x8000_0000, u32::MAX]),
            8 => rng.next() as u32,
            _ => old.wrapping_add(1),
        };
        if v != old {
            return v;
        }
    }
    old ^ 1
}

fn op_type_field(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    let Some(f) = pick_field(l, rng, |f| {
        matches!(f.kind, Kind::ValueType | Kind::ArrItemType)
    }) else {
        return false;
    };
    let new = type_id(rng, m.u32_at(f.pos), 12);
    m.set_u32(f.pos, new, &f.name());
    true
}

/// ggml type ids: 0..=42 exist in this ggml (4, 5, 31..=33, 36..=38 were removed).
const GGML_TYPE_MAX: u32 = 42;

fn op_tensor(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    if l.tensors.is_empty() {
        return false;
    }
    let t = rng.pick(&l.tensors);
    let owner = format!("tensor[{}] {}", t.index, t.name);
    match rng.below(4) {
        0 => {
            let old = m.u32_at(t.n_dims_pos);
            let new = *rng.pick(&[
                0,
                1,
                2,
                3,
                4,
                5,
                8,
                old.wrapping_add(1),
                old.wrapping_sub(1),
                1 << 31,
                u32::MAX,
            ]);
            m.set_u32(t.n_dims_pos, new, &format!("{owner} n_dims"));
        }
        1 => {
            let d = rng.below(t.dims.len() as u64) as usize;
            let (pos, _) = t.dims[d];
            let old = m.u64_at(pos);
            let block = ggml_block(t.ggml_type).0;
            let new = match rng.below(14) {
                0 => 0,
                1 => 1,
                2 => 2,
                3 => old.wrapping_add(1),
                4 => old.wrapping_sub(1),
                5 => old.wrapping_add(block),
                6 => old.wrapping_sub(block),
                7 => old.wrapping_mul(2),
                8 => old / 2,
                9 => 1 << 31,
                10 => 1 << 32,
                11 => 1 << 40,
                12 => *rng.pick(&[1 << 63, u64::MAX, u64::MAX / block * block]),
                _ => rng.next(),
            };
            m.set_u64(pos, new, &format!("{owner} dim[{d}]"));
        }
        2 => {
            let old = m.u32_at(t.type_pos);
            let new = type_id(rng, old, GGML_TYPE_MAX);
            m.set_u32(t.type_pos, new, &format!("{owner} ggml type"));
        }
        _ => {
            let old = m.u64_at(t.offset_pos);
            let other = rng.pick(&l.tensors).offset;
            let data = l.file_len - l.data_start as u64;
            let new = match rng.below(13) {
                0 => old.wrapping_add(1),
                1 => old.wrapping_add(16),
                2 => old.wrapping_sub(1),
                3 => old.wrapping_add(l.alignment),
                4 => other,
                5 => data,
                6 => data + 4096,
                7 => l.file_len,
                8 => u64::MAX,
                9 => u64::MAX - l.data_start as u64 + 1,
                10 => 1 << 63,
                11 => 0,
                _ => rng.next(),
            };
            m.set_u64(t.offset_pos, new, &format!("{owner} offset"));
        }
    }
    true
}

fn op_dup_token(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    let Some(arr) = l.kv("tokenizer.ggml.tokens").and_then(|kv| kv.arr.as_ref()) else {
        return false;
    };
    let s = &arr.strings;
    if s.len() < 2 {
        return false;
    }
    let special: Vec<u64> = l
        .kvs
        .iter()
        .filter(|kv| kv.key.ends_with("_token_id"))
        .filter_map(|kv| kv.as_u64())
        .filter(|&id| (id as usize) < s.len())
        .collect();
    for _ in 0..8 {
        // Overwrite a special token, or copy one over another token, or two random tokens.
        let (i, j) = match rng.below(4) {
            0 if !special.is_empty() => (
                *rng.pick(&special) as usize,
                rng.below(s.len() as u64) as usize,
            ),
            1 if !special.is_empty() => (
                rng.below(s.len() as u64) as usize,
                *rng.pick(&special) as usize,
            ),
            _ => (
                rng.below(s.len() as u64) as usize,
                rng.below(s.len() as u64) as usize,
            ),
        };
        // Find a token of i's length near j (the same length is what keeps the file valid).
        let len = s[i].1;
        if len == 0 {
            continue;
        }
        let ipos = s[i].0 + 8;
        let found = (0..s.len())
            .map(|k| (j + k) % s.len())
            .take(200_000)
            .find(|&k| {
                k != i
                    && s[k].1 == len
                    && m.header[s[k].0 + 8..s[k].0 + 8 + len as usize]
                        != m.header[ipos..ipos + len as usize]
            });
        let Some(k) = found else { continue };
        let bytes = m.get(s[k].0 + 8, len as usize);
        m.set_bytes(
            ipos,
            &bytes,
            &format!("kv tokenizer.ggml.tokens elem[{i}] (copy of elem[{k}], a duplicate token)"),
        );
        return true;
    }
    false
}

fn n_vocab(l: &Layout) -> u64 {
    l.kv("tokenizer.ggml.tokens")
        .and_then(|kv| kv.arr.as_ref())
        .map_or(0, |a| a.count)
}

fn set_kv_int(m: &mut Mutant, l: &Layout, key: &str, v: u64) -> bool {
    let Some(kv) = l.kv(key) else { return false };
    if scalar_width(kv.vtype).is_none() || is_float(kv.vtype) {
        return false;
    }
    m.set_scalar(
        kv.value_pos,
        kv.vtype,
        &v.to_le_bytes(),
        &format!("kv {key}"),
    );
    true
}

fn op_special_id(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    let keys: Vec<&str> = l
        .kvs
        .iter()
        .filter(|kv| kv.key.ends_with("_token_id") && scalar_width(kv.vtype).is_some())
        .map(|kv| kv.key.as_str())
        .collect();
    if keys.is_empty() {
        return false;
    }
    let key = *rng.pick(&keys);
    let nv = n_vocab(l);
    let v = match rng.below(9) {
        0 => nv,
        1 => nv + 1,
        2 => nv + 1000,
        3 => u32::MAX as u64,
        4 => 1 << 31,
        5 => 1 << 20,
        6 => u64::MAX,
        7 => nv.saturating_sub(1),
        _ => rng.next(),
    };
    set_kv_int(m, l, key, v)
}

fn op_block_count(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    let key = format!("{}.block_count", l.arch());
    let old = l.kv(&key).and_then(|kv| kv.as_u64()).unwrap_or(0);
    let v = *rng.pick(&[
        0,
        1,
        old.saturating_sub(1),
        old + 1,
        old * 2,
        64,
        512,
        513,
        1000,
        1 << 31,
        u32::MAX as u64,
    ]);
    set_kv_int(m, l, &key, v)
}

fn op_head_count(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    let arch = l.arch();
    let hc_key = format!("{arch}.attention.head_count");
    let kv_key = format!("{arch}.attention.head_count_kv");
    let hc = l.kv(&hc_key).and_then(|kv| kv.as_u64()).unwrap_or(1);
    let hkv = l.kv(&kv_key).and_then(|kv| kv.as_u64()).unwrap_or(1);
    if rng.chance(50) {
        // head_count: 0, values that do not divide the embedding or that head_count_kv does
        // not divide, huge.
        let v = *rng.pick(&[
            0,
            1,
            hc + 1,
            hc.saturating_sub(1),
            5,
            7,
            hc * 2,
            1000,
            1 << 31,
            u32::MAX as u64,
        ]);
        set_kv_int(m, l, &hc_key, v)
    } else {
        let v = *rng.pick(&[0, hkv + 1, hc + 1, 2 * hc, 5, 7, 1 << 31, u32::MAX as u64]);
        set_kv_int(m, l, &kv_key, v)
    }
}

fn op_hparam(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    let prefix = format!("{}.", l.arch());
    let kvs: Vec<_> = l
        .kvs
        .iter()
        .filter(|kv| kv.key.starts_with(&prefix) && scalar_width(kv.vtype).is_some())
        .collect();
    if kvs.is_empty() {
        return false;
    }
    let kv = *rng.pick(&kvs);
    let new = if is_float(kv.vtype) {
        scalar_value(rng, kv.vtype, &kv.raw)
    } else {
        let old = kv.as_u64().unwrap_or(0);
        let v = *rng.pick(&[
            0,
            1,
            old + 1,
            old.saturating_sub(1),
            old * 2,
            old / 2,
            7,
            1000,
            1 << 20,
            1 << 31,
            u32::MAX as u64,
        ]);
        v.to_le_bytes().to_vec()
    };
    m.set_scalar(kv.value_pos, kv.vtype, &new, &format!("kv {}", kv.key));
    true
}

/// Keys worth renaming a key to (when the lengths match).
const KNOWN_KEYS: &[&str] = &[
    "general.alignment",
    "general.architecture",
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.merges",
    "llama.block_count",
    "gemma3.block_count",
    "llama.expert_count",
    "gemma3.expert_count",
    "llama.vocab_size",
    "general.file_type",
];

fn op_rename_key(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    if l.kvs.is_empty() {
        return false;
    }
    let kv = rng.pick(&l.kvs);
    let len = kv.key.len();
    let mut targets: Vec<&str> = KNOWN_KEYS
        .iter()
        .copied()
        .chain(l.kvs.iter().map(|k| k.key.as_str()))
        .filter(|k| k.len() == len && *k != kv.key)
        .collect();
    targets.dedup();
    let new: Vec<u8> = if !targets.is_empty() && rng.chance(60) {
        rng.pick(&targets).as_bytes().to_vec()
    } else {
        // A typo: the key goes missing.
        let mut b = kv.key.as_bytes().to_vec();
        let i = rng.below(len as u64) as usize;
        b[i] = if b[i] == b'x' { b'y' } else { b'x' };
        b
    };
    m.set_bytes(
        kv.key_pos,
        &new,
        &format!("kv[{}] {} key", kv.index, kv.key),
    );
    true
}

/// Same-length replacements for string values that select behaviour.
const NAMES: &[&str] = &[
    "llama", "gemma", "qwen2", "mamba", "bloom", "gemma2", "gemma3", "llama4", "falcon", "gpt2",
    "bert", "t5", "rwkv", "phi3", "qwen3", "spm", "bpe",
];

fn op_str_bytes(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    let Some(f) = pick_field(l, rng, |f| {
        matches!(
            f.kind,
            Kind::StrBytes | Kind::KeyBytes | Kind::TensorName | Kind::ArrStrBytes
        )
    }) else {
        return false;
    };
    let mut b = m.get(f.pos, f.width);
    let important = f.owner == "kv general.architecture" || f.owner == "kv tokenizer.ggml.model";
    let same_len: Vec<&&str> = NAMES.iter().filter(|n| n.len() == b.len()).collect();
    if important && !same_len.is_empty() && rng.chance(50) {
        b = rng.pick(&same_len).as_bytes().to_vec();
    } else {
        let i = rng.below(b.len() as u64) as usize;
        b[i] = *rng.pick(&[
            b'\n', 0, 0x1b, b'\r', 0x7f, 0xff, 0xc3, b'%', b'\'', b'"', b'x',
        ]);
    }
    let name = f.name();
    m.set_bytes(f.pos, &b, &name);
    true
}

fn op_flip(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    let n = 1 + rng.below(8);
    let mut flips = Vec::new();
    for _ in 0..n {
        let pos = if rng.chance(50) || l.fields.is_empty() {
            rng.below(l.header_end as u64) as usize
        } else {
            let f = rng.pick(&l.fields);
            f.pos + rng.below(f.width as u64) as usize
        };
        let old = m.header[pos];
        let new = match rng.below(4) {
            0 => old ^ (1 << rng.below(8)),
            1 => 0,
            2 => 0xff,
            _ => rng.next() as u8,
        };
        m.header[pos] = new;
        flips.push(format!("@{pos:#x} {old:#04x}->{new:#04x}"));
    }
    m.desc.push(format!("byte flips: {}", flips.join(", ")));
    true
}

fn op_truncate(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    let len = l.file_len;
    let hs = l.data_start as u64;
    let (n, where_) = match rng.below(6) {
        0 | 1 => (rng.below(l.header_end as u64), "inside the header"),
        2 => (hs, "at the data start"),
        3 | 4 => (hs + 1 + rng.below(len - hs - 1), "inside the data"),
        _ => (len - 1 - rng.below(64), "just before the end"),
    };
    m.tail = Tail::Truncate(n);
    m.desc
        .push(format!("truncate {where_}: {len} -> {n} bytes"));
    true
}

fn op_append(m: &mut Mutant, rng: &mut Rng) -> bool {
    let n = match rng.below(3) {
        0 => 1,
        1 => 1 + rng.below(64),
        _ => 1 + rng.below(4096),
    };
    let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
    m.desc.push(format!("append {n} random bytes at EOF"));
    m.tail = Tail::Append(bytes);
    true
}

fn op_magic_version(m: &mut Mutant, rng: &mut Rng) -> bool {
    if rng.chance(30) {
        let new = *rng.pick(&[b"GGUf", b"FUGG", b"GGML", b"\0GUF"]);
        m.set_bytes(0, new, "header magic");
    } else {
        let new = *rng.pick(&[0u32, 1, 2, 4, 0x0300_0000, u32::MAX]);
        m.set_u32(4, new, "header version");
    }
    true
}

/// A fixed mutation for the hostile tests: sets an integer-or-float kv by key (panics when the
/// key is missing or of another kind).
pub fn set_kv(layout: &Layout, m: &mut Mutant, key: &str, value: KvValue) {
    let kv = layout
        .kv(key)
        .unwrap_or_else(|| panic!("no key {key} in the model"));
    let w = scalar_width(kv.vtype).unwrap_or_else(|| panic!("{key} is not a scalar"));
    let raw = match (value, kv.vtype) {
        (KvValue::Int(v), t) if !is_float(t) => v.to_le_bytes().to_vec(),
        (KvValue::Float(v), 6) => (v as f32).to_le_bytes().to_vec(),
        (KvValue::Float(v), 12) => v.to_le_bytes().to_vec(),
        _ => panic!("{key}: value kind does not match its type {}", kv.vtype),
    };
    let _ = is_signed;
    m.set_scalar(kv.value_pos, kv.vtype, &raw[..w], &format!("kv {key}"));
}

#[derive(Clone, Copy, Debug)]
pub enum KvValue {
    Int(u64),
    Float(f64),
}

/// Public wrappers for the hostile tests.
pub fn set_u64_at(m: &mut Mutant, pos: usize, v: u64, what: &str) {
    m.set_u64(pos, v, what)
}

pub fn set_u32_at(m: &mut Mutant, pos: usize, v: u32, what: &str) {
    m.set_u32(pos, v, what)
}

pub fn dup_token(l: &Layout, m: &mut Mutant, rng: &mut Rng) -> bool {
    op_dup_token(l, m, rng)
}
