//! Typed access to a model's `{arch}.*` keys, with llama.cpp's type rules (it refuses a key
//! of any other GGUF type than the one it reads), and the small checks every reader shares:
//! ranges, finite numbers, per-layer values.

use super::super::excerpt;
use super::super::gguf::{value_type, GgufHeader, MetaValue};

fn type_name(t: u32) -> &'static str {
    match t {
        value_type::U8 => "uint8",
        value_type::I8 => "int8",
        value_type::U16 => "uint16",
        value_type::I16 => "int16",
        value_type::U32 => "uint32",
        value_type::I32 => "int32",
        value_type::F32 => "float32",
        value_type::BOOL => "bool",
        value_type::STRING => "string",
        value_type::ARRAY => "array",
        value_type::U64 => "uint64",
        value_type::I64 => "int64",
        value_type::F64 => "float64",
        _ => "unknown",
    }
}

pub(super) struct Keys<'a> {
    pub header: &'a GgufHeader,
    /// The architecture: the keys' prefix.
    pub arch: &'a str,
}

impl Keys<'_> {
    pub(super) fn full(&self, key: &str) -> String {
        format!("{}.{key}", self.arch)
    }

    /// The value of `{arch}.{key}` if present, checked to be of type `want`.
    pub(super) fn typed(&self, key: &str, want: u32) -> Result<Option<&MetaValue>, String> {
        let full = self.full(key);
        match self.header.meta.get(&full) {
            None => Ok(None),
            Some(m) if m.value_type == want => Ok(Some(&m.value)),
            Some(m) => Err(format!(
                "{full} must be a {}, not a {}",
                type_name(want),
                type_name(m.value_type)
            )),
        }
    }

    pub(super) fn u32(&self, key: &str) -> Result<Option<u64>, String> {
        Ok(match self.typed(key, value_type::U32)? {
            Some(MetaValue::Uint(v)) => Some(*v),
            _ => None,
        })
    }

    pub(super) fn required_u32(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, String> {
        let v = self
            .u32(key)?
            .ok_or_else(|| format!("{} is missing", self.full(key)))?;
        in_range(&self.full(key), v, range)
    }

    pub(super) fn f32(&self, key: &str) -> Result<Option<f64>, String> {
        Ok(match self.typed(key, value_type::F32)? {
            Some(MetaValue::Float(v)) => Some(*v),
            _ => None,
        })
    }

    pub(super) fn string(&self, key: &str) -> Result<Option<&str>, String> {
        Ok(match self.typed(key, value_type::STRING)? {
            Some(MetaValue::Str(s)) => Some(s.as_str()),
            _ => None,
        })
    }

    /// A per-layer value given as one uint32 or an array of `n_layer` equal integers
    /// (values that differ between layers are valid, but hypura does not tier them).
    pub(super) fn per_layer(&self, key: &str, n_layer: u64) -> Result<Option<u64>, String> {
        let full = self.full(key);
        let Some(meta) = self.header.meta.get(&full) else {
            return Ok(None);
        };
        match &meta.value {
            MetaValue::Uint(v) if meta.value_type == value_type::U32 => Ok(Some(*v)),
            MetaValue::Array(a) if matches!(a.item_type, value_type::U32 | value_type::I32) => {
                if a.count != n_layer {
                    return Err(format!(
                        "{full} has {} values for {n_layer} layers",
                        a.count
                    ));
                }
                let values = self.header.numbers(a);
                if values.iter().any(|v| *v < 0.0 || *v > f64::from(u32::MAX)) {
                    return Err(format!("{full} holds a value out of range"));
                }
                // The largest (values that differ between layers are not tiered: see
                // `not_tiered`).
                Ok(Some(values.into_iter().fold(0.0f64, f64::max) as u64))
            }
            _ => Err(format!(
                "{full} must be a uint32 or an array of integers, not a {}",
                type_name(meta.value_type)
            )),
        }
    }

    /// Each layer's value of a per-layer key: an array of `n_layer` integers, or one uint32
    /// for every layer.
    pub(super) fn layer_values(&self, key: &str, n_layer: u64) -> Result<Option<Vec<u64>>, String> {
        let full = self.full(key);
        let Some(meta) = self.header.meta.get(&full) else {
            return Ok(None);
        };
        match &meta.value {
            MetaValue::Array(a) if matches!(a.item_type, value_type::U32 | value_type::I32) => {
                // Checked as `per_layer` checks it (count and range).
                self.per_layer(key, n_layer)?;
                Ok(Some(
                    self.header
                        .numbers(a)
                        .into_iter()
                        .map(|v| v as u64)
                        .collect(),
                ))
            }
            _ => Ok(self
                .per_layer(key, n_layer)?
                .map(|v| vec![v; n_layer as usize])),
        }
    }

    pub(super) fn absent_or_zero(&self, key: &str) -> Result<(), String> {
        match self.header.get(&self.full(key)) {
            None | Some(MetaValue::Uint(0)) | Some(MetaValue::Int(0)) => Ok(()),
            Some(v) => Err(format!(
                "{} = {} is not supported",
                self.full(key),
                shown(v)
            )),
        }
    }
}

pub(super) fn shown(v: &MetaValue) -> String {
    match v {
        MetaValue::Uint(v) => v.to_string(),
        MetaValue::Int(v) => v.to_string(),
        MetaValue::Float(v) => v.to_string(),
        MetaValue::Bool(v) => v.to_string(),
        MetaValue::Str(s) => excerpt(s),
        MetaValue::Array(a) => format!("an array of {}", a.count),
    }
}

pub(super) fn in_range(
    key: &str,
    v: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, String> {
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{key} = {v} (must be {} to {})",
            range.start(),
            range.end()
        ))
    }
}

pub(super) fn finite(key: &str, v: Option<f64>, positive: bool) -> Result<(), String> {
    match v {
        Some(v) if !v.is_finite() || (positive && v <= 0.0) || v < 0.0 => Err(format!(
            "{key} = {v} (must be a finite{} number)",
            if positive {
                " positive"
            } else {
                ", non-negative"
            }
        )),
        _ => Ok(()),
    }
}
