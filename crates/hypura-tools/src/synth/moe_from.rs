//! A mixture-of-experts model built from a real dense one: every layer's FFN becomes
//! `n_expert` experts that are each a copy of it, picked by a random router. llama.cpp's
//! Mixtral-style layer (`llama` with experts) weighs the picked experts' outputs by their
//! softmaxed router scores, renormalized to sum to 1: the layer's output is the dense FFN's
//! (up to rounding), so the model writes the dense model's readable text while its router
//! picks experts at random, which is what makes it a real test of reading experts slice by
//! slice.

use std::cell::RefCell;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use hypura_core::{LoadOptions, Plan};

use super::SynthError;
use crate::gguf::{read_layout, GgufWriter, SourceTensor, TensorEntry, Value};
use crate::quant::Rng;
use llama_cpp_sys_2 as sys;

/// The dense FFN's tensors, and the expert tensor each becomes.
const FFN_TO_EXPERTS: [(&str, &str); 3] = [
    ("ffn_gate.weight", "ffn_gate_exps.weight"),
    ("ffn_up.weight", "ffn_up_exps.weight"),
    ("ffn_down.weight", "ffn_down_exps.weight"),
];

/// Where a tensor of the new file comes from.
enum Source {
    /// A tensor of the dense model, as it is.
    Copy(SourceTensor, u64),
    /// A dense FFN tensor, repeated once per expert.
    Experts(SourceTensor, u64),
    /// A random F32 router of this many values.
    Router(u64),
}

/// The string value of a raw record (type id, length, bytes), if it is one.
fn raw_string(raw: &[u8]) -> Option<String> {
    if raw.len() < 12 || u32::from_le_bytes(raw[..4].try_into().ok()?) != 8 {
        return None;
    }
    String::from_utf8(raw[12..].to_vec()).ok()
}

/// Bytes of a tensor of `dims` and type `ggml_type`.
fn tensor_bytes(t: &SourceTensor) -> u64 {
    // SAFETY: plain function of a type id (checked valid by hypura's validation).
    let row = unsafe { sys::ggml_row_size(t.ggml_type, t.dims[0] as i64) } as u64;
    row * t.dims.iter().skip(1).product::<u64>()
}

/// Writes to `out` the MoE built from the dense `llama`-family model `src` (see the module's
/// notes): `n_expert` experts per layer, `n_used` picked per token. Returns the file's size.
pub fn moe_from(src: &Path, out: &Path, n_expert: u32, n_used: u32) -> Result<u64, SynthError> {
    let name = src.display().to_string();
    if !(2..=256).contains(&n_expert) || n_used == 0 || n_used > n_expert {
        return Err(SynthError::Shape(format!(
            "--moe-from: {n_expert} experts with {n_used} used (2 to 256 experts, 1 to all used)"
        )));
    }
    // Writing over the source would destroy it before it is read (hypura never writes to a
    // model file).
    if super::same_file(src, out) {
        return Err(SynthError::Unknown(format!(
            "--moe-from {name}: --out is the source itself"
        )));
    }
    // hypura's own checks first: a damaged or hostile file gets their one-line error.
    let plan = Plan::for_options(&LoadOptions::new(src))
        .map_err(|e| SynthError::Unknown(format!("--moe-from: {e}")))?;
    if plan.arch != "llama" {
        return Err(SynthError::Unknown(format!(
            "--moe-from {name}: a {} model; only dense llama-family models become Mixtral-style MoEs",
            plan.arch
        )));
    }
    let layout = read_layout(src)?;
    let arch = layout
        .records
        .iter()
        .find(|(k, _)| k == "general.architecture")
        .and_then(|(_, raw)| raw_string(raw))
        .unwrap_or_default();
    if layout
        .records
        .iter()
        .any(|(k, _)| k == &format!("{arch}.expert_count"))
    {
        return Err(SynthError::Unknown(format!(
            "--moe-from {name}: already a mixture-of-experts model"
        )));
    }
    let mut w = GgufWriter::new();
    for (key, raw) in &layout.records {
        if key != "general.alignment" {
            w.meta(key.clone(), Value::Raw(raw.clone()));
        }
    }
    w.meta(format!("{arch}.expert_count"), Value::U32(n_expert))
        .meta(format!("{arch}.expert_used_count"), Value::U32(n_used));
    let mut sources = Vec::new();
    let mut layers_done = std::collections::HashSet::new();
    for t in &layout.tensors {
        let nbytes = tensor_bytes(t);
        let expert = FFN_TO_EXPERTS.iter().find_map(|(dense, experts)| {
            let prefix = t.name.strip_suffix(dense)?;
            prefix
                .starts_with("blk.")
                .then(|| (prefix.to_string(), *experts))
        });
        match expert {
            Some((prefix, experts)) => {
                let mut dims = t.dims.clone();
                dims.push(u64::from(n_expert));
                w.tensor(TensorEntry {
                    name: format!("{prefix}{experts}"),
                    dims,
                    ggml_type: t.ggml_type,
                    nbytes: nbytes * u64::from(n_expert),
                });
                sources.push(Source::Experts(t.clone(), nbytes));
                // One router per layer: n_embd inputs (the gate's and up's rows are n_embd
                // long; the down projection's output is).
                let n_embd = if experts == "ffn_down_exps.weight" {
                    t.dims[1]
                } else {
                    t.dims[0]
                };
                if layers_done.insert(prefix.clone()) {
                    w.tensor(TensorEntry {
                        name: format!("{prefix}ffn_gate_inp.weight"),
                        dims: vec![n_embd, u64::from(n_expert)],
                        ggml_type: sys::GGML_TYPE_F32,
                        nbytes: n_embd * u64::from(n_expert) * 4,
                    });
                    sources.push(Source::Router(n_embd * u64::from(n_expert)));
                }
            }
            None => {
                w.tensor(TensorEntry {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ggml_type: t.ggml_type,
                    nbytes,
                });
                sources.push(Source::Copy(t.clone(), nbytes));
            }
        }
    }
    if layers_done.is_empty() {
        return Err(SynthError::Unknown(format!(
            "--moe-from {name}: no dense FFN (blk.N.ffn_gate/up/down.weight) to turn into experts"
        )));
    }
    let mut file = std::fs::File::open(src).map_err(|source| SynthError::Write {
        path: name.clone(),
        source,
    })?;
    let failure: RefCell<Option<std::io::Error>> = RefCell::new(None);
    let mut rng = Rng(4242);
    let mut read = |t: &SourceTensor, nbytes: u64, data: &mut Vec<u8>| {
        let start = data.len();
        data.resize(start + nbytes as usize, 0);
        if let Err(e) = file
            .seek(SeekFrom::Start(t.file_offset))
            .and_then(|_| file.read_exact(&mut data[start..]))
        {
            failure.borrow_mut().get_or_insert(e);
        }
    };
    w.write_file(out, |i, data| match &sources[i] {
        Source::Copy(t, nbytes) => read(t, *nbytes, data),
        Source::Experts(t, nbytes) => {
            read(t, *nbytes, data);
            let one = data.clone();
            for _ in 1..n_expert {
                data.extend_from_slice(&one);
            }
        }
        Source::Router(n) => data.extend((0..*n).flat_map(|_| rng.uniform().to_le_bytes())),
    })
    .map_err(|source| SynthError::Write {
        path: out.display().to_string(),
        source,
    })?;
    if let Some(e) = failure.into_inner() {
        let _ = std::fs::remove_file(out);
        return Err(SynthError::Unknown(format!(
            "--moe-from {name}: cannot read: {e}"
        )));
    }
    std::fs::metadata(out)
        .map(|m| m.len())
        .map_err(|source| SynthError::Write {
            path: out.display().to_string(),
            source,
        })
}
