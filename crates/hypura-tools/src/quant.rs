//! Weight types of synthetic models: parsing ggml's type names, and random weights
//! quantized by ggml's own functions (`ggml_quantize_chunk`), so that every type the CPU
//! backend computes can be written.

use std::ffi::CStr;

use llama_cpp_sys_2 as sys;

use crate::synth::SynthError;

/// The weight types of a synthetic model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightTypes {
    /// Every matrix (and the embedding) of one ggml type.
    Uniform(u32),
    /// As llama.cpp's Q4_K_M mixes them: Q4_K, with Q6_K for the head, `attn_v` and
    /// `ffn_down`.
    Q4KM,
}

impl WeightTypes {
    /// Parses a type name as ggml spells it (`q4_0`, `iq2_xxs`, `mxfp4`, `bf16`, …, any
    /// case), or the mix `q4_k_m`.
    pub fn parse(name: &str) -> Result<Self, SynthError> {
        let lower = name.to_ascii_lowercase();
        if lower == "q4_k_m" {
            return Ok(WeightTypes::Q4KM);
        }
        (0..sys::GGML_TYPE_COUNT)
            .find(|&t| type_name(t).as_deref() == Some(lower.as_str()) && quantizable(t))
            .map(WeightTypes::Uniform)
            .ok_or_else(|| {
                SynthError::Unknown(format!(
                    "--type {name}: not a type the generator writes (known: {}, q4_k_m)",
                    known_types().join(", ")
                ))
            })
    }

    /// The type of tensor `name`, a matrix or the embedding.
    pub(crate) fn of(self, name: &str) -> u32 {
        match self {
            WeightTypes::Uniform(t) => t,
            WeightTypes::Q4KM
                if name == "output.weight"
                    || name.ends_with("attn_v.weight")
                    || name.ends_with("ffn_down.weight")
                    || name.ends_with("ffn_down_exps.weight") =>
            {
                sys::GGML_TYPE_Q6_K
            }
            WeightTypes::Q4KM => sys::GGML_TYPE_Q4_K,
        }
    }

    /// The value of `general.file_type` (llama.cpp's `llama_ftype`) that names it, if any.
    pub(crate) fn file_type(self) -> Option<u32> {
        Some(match self {
            WeightTypes::Q4KM => 15,
            WeightTypes::Uniform(t) => match t {
                sys::GGML_TYPE_F32 => 0,
                sys::GGML_TYPE_F16 => 1,
                sys::GGML_TYPE_Q4_0 => 2,
                sys::GGML_TYPE_Q4_1 => 3,
                sys::GGML_TYPE_Q8_0 => 7,
                sys::GGML_TYPE_Q5_0 => 8,
                sys::GGML_TYPE_Q5_1 => 9,
                sys::GGML_TYPE_Q2_K => 10,
                sys::GGML_TYPE_Q3_K => 12,
                sys::GGML_TYPE_Q4_K => 15,
                sys::GGML_TYPE_Q5_K => 17,
                sys::GGML_TYPE_Q6_K => 18,
                _ => return None,
            },
        })
    }
}

/// ggml's name of type `t`, if it has one.
pub(crate) fn type_name(t: u32) -> Option<String> {
    // SAFETY: returns a pointer to a static string for any id below GGML_TYPE_COUNT (or
    // NULL for removed types).
    let p = unsafe { sys::ggml_type_name(t) };
    (!p.is_null()).then(|| {
        // SAFETY: a non-null pointer to a static NUL-terminated string.
        unsafe { CStr::from_ptr(p) }
            .to_string_lossy()
            .to_ascii_lowercase()
    })
}

/// True for the types this generator writes: every type a weight matrix may be stored as
/// (`hypura_core::families::WEIGHT_TYPES`), each of which `ggml_quantize_chunk` produces.
fn quantizable(t: u32) -> bool {
    hypura_core::families::WEIGHT_TYPES.contains(&t)
}

/// The names of the types the generator writes.
pub fn known_types() -> Vec<String> {
    (0..sys::GGML_TYPE_COUNT)
        .filter(|&t| quantizable(t))
        .filter_map(type_name)
        .collect()
}

/// Elements per block and bytes per block of type `t`.
pub(crate) fn block_of(t: u32) -> (u64, u64) {
    // SAFETY: plain table lookups for a valid type id.
    unsafe { (sys::ggml_blck_size(t) as u64, sys::ggml_type_size(t) as u64) }
}

pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub(crate) fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Roughly normal with mean 0 and standard deviation 1 (a sum of uniforms).
    pub(crate) fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() * 0.866
    }
}

/// `n_rows` rows of `n_in` random weights (mean 0, standard deviation `0.5 / sqrt(n_in)`),
/// quantized to type `t` by ggml.
pub(crate) fn quantized_rows(t: u32, n_in: u64, n_rows: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let std = 0.5 / (n_in as f32).sqrt();
    let floats: Vec<f32> = (0..n_in * n_rows).map(|_| rng.normal() * std).collect();
    // SAFETY: plain function of a valid type id.
    let row_bytes = unsafe { sys::ggml_row_size(t, n_in as i64) };
    let mut out = vec![0u8; row_bytes * n_rows as usize];
    // Types that need an importance matrix get a uniform one.
    let importance = vec![1.0f32; n_in as usize];
    // SAFETY: `floats` holds `n_rows * n_in` values and `out` the bytes of `n_rows` rows of
    // `n_in` elements of type `t` (`n_in` is a multiple of its block size, checked by the
    // caller); the importance matrix has `n_in` values.
    unsafe {
        sys::ggml_quantize_init(t);
        sys::ggml_quantize_chunk(
            t,
            floats.as_ptr(),
            out.as_mut_ptr().cast(),
            0,
            n_rows as i64,
            n_in as i64,
            importance.as_ptr(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_name_parses_and_quantizes_a_row() {
        for name in known_types() {
            let parsed = WeightTypes::parse(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
            let WeightTypes::Uniform(t) = parsed else {
                panic!("{name} is one type");
            };
            let (block, _) = block_of(t);
            let n_in = 256u64.max(block);
            let rows = quantized_rows(t, n_in, 2, 1);
            // SAFETY: plain function of a valid type id.
            let row_bytes = unsafe { sys::ggml_row_size(t, n_in as i64) };
            assert_eq!(rows.len(), 2 * row_bytes, "{name}");
            assert!(rows.iter().any(|b| *b != 0), "{name}: all zero");
        }
        assert_eq!(
            WeightTypes::parse("Q4_K_M").unwrap(),
            WeightTypes::Q4KM,
            "the mix"
        );
        assert!(WeightTypes::parse("q9_9").is_err());
    }
}
