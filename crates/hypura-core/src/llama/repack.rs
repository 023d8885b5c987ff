//! Which weights llama.cpp's CPU backend keeps in a repacked layout (`CPU_REPACK`, weights
//! interleaved for its faster matrix kernels; `AMX`, tiles for Intel's matrix extensions, in a
//! build for a CPU that has them), decided before loading, the way llama.cpp's loader decides
//! it: for each weight, a stand-in of the operation the weight takes part in
//! (a matrix product, or an expert product for `ffn_*_exps`) is offered to the CPU device with
//! the weight in each of its extra buffer types, and the first that supports it wins.
//!
//! hypura then gives exactly those weights a repacking buffer of its own (see
//! [`crate::memory::HypuraBufferType::wrapping`]) and fills them itself, in parallel. Where
//! hypura cannot be sure to choose as llama.cpp would (another device or extra buffer type
//! present, a tied LM head that would be repacked, a weight whose operation the name does not
//! say), the choice is [`Repacking::Unsure`] and llama.cpp loads the model itself.
//!
//! A tiered model's resident weights are chosen the same way ([`RepackScope::Resident`]);
//! there hypura places every weight itself, so a weight in doubt just stays plain, as the
//! streamed weights do.

use std::collections::BTreeSet;
use std::ffi::CStr;

use super::cpu;
use crate::model::{ModelInventory, Role};
use crate::sys;

/// `ggml_backend_dev_get_extra_bufts`, the CPU backend's list of its extra buffer types.
type GetExtraBufts =
    unsafe extern "C" fn(sys::ggml_backend_dev_t) -> *mut sys::ggml_backend_buffer_type_t;

/// The names of ggml's extra CPU buffer types that hypura fills itself: their `set_tensor`
/// converts a tensor's rows into a layout where whole groups of rows (at most 16) keep their
/// place, so hypura can convert a tensor in chunks of rows, in parallel (see
/// [`crate::runtime::repacked`]).
const FILLED_BUFT_NAMES: [&CStr; 2] = [c"CPU_REPACK", c"AMX"];

/// What llama.cpp would repack.
pub(crate) enum Repacking {
    /// Nothing (repacking off, or no weight qualifies).
    Nothing,
    /// These weights, in these buffer types (ggml's `CPU_REPACK` or `AMX`), one group per type.
    Some(Vec<RepackGroup>),
    /// hypura cannot reproduce llama.cpp's choice here; why.
    Unsure(String),
}

/// Weights llama.cpp would keep in one extra buffer type.
pub(crate) struct RepackGroup {
    pub buft: sys::ggml_backend_buffer_type_t,
    pub names: BTreeSet<String>,
}

/// The buffer type's name.
fn buft_name(buft: sys::ggml_backend_buffer_type_t) -> String {
    // SAFETY: buffer type names are static NUL-terminated strings.
    unsafe { CStr::from_ptr(sys::ggml_backend_buft_name(buft)) }
        .to_string_lossy()
        .into_owned()
}

/// The operation a weight takes part in, as llama.cpp's loader tests it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WeightOp {
    MatMul,
    ExpertMatMul,
    /// Anything the repacked layout never serves (row lookups, additions, norms).
    Other,
}

fn weight_op(role: Role, name: &str, n_dims: usize) -> Option<WeightOp> {
    if !name.ends_with(".weight") {
        return Some(WeightOp::Other); // biases are added, never multiplied
    }
    match role {
        Role::Small | Role::Embedding => Some(WeightOp::Other),
        Role::Experts if n_dims == 3 => Some(WeightOp::ExpertMatMul),
        Role::Experts => None,
        Role::Output | Role::Attention | Role::Ffn => Some(WeightOp::MatMul),
        // Other matrices: a row lookup if it is an embedding, otherwise unknown.
        Role::OtherLayer | Role::Other if name.contains("embd") => Some(WeightOp::Other),
        Role::OtherLayer | Role::Other => None,
    }
}

/// A ggml context for stand-in tensors (no data), freed on drop.
struct MetaContext(*mut sys::ggml_context);

impl MetaContext {
    fn new(tensors: usize) -> Option<Self> {
        // SAFETY: plain parameters; no_alloc, so only tensor headers are allocated.
        let ctx = unsafe {
            sys::ggml_init(sys::ggml_init_params {
                mem_size: sys::ggml_tensor_overhead() * tensors,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            })
        };
        (!ctx.is_null()).then_some(Self(ctx))
    }
}

impl Drop for MetaContext {
    fn drop(&mut self) {
        // SAFETY: created by ggml_init, freed once.
        unsafe { sys::ggml_free(self.0) };
    }
}

/// Whether `dev` runs `op` on a weight (`weight`, an input of `op`) kept in `buft`: a dummy
/// buffer of that type is attached to the weight while the device is asked.
///
/// # Safety
/// `weight` must be a stand-in tensor without a buffer, used by `op`.
unsafe fn supported_in(
    dev: sys::ggml_backend_dev_t,
    buft: sys::ggml_backend_buffer_type_t,
    weight: *mut sys::ggml_tensor,
    op: *mut sys::ggml_tensor,
) -> bool {
    // SAFETY: a zero-size buffer is a dummy that only names its type; the weight is a
    // stand-in whose buffer is restored before returning.
    unsafe {
        let dummy = sys::ggml_backend_buft_alloc_buffer(buft, 0);
        if dummy.is_null() {
            return false;
        }
        (*weight).buffer = dummy;
        let supported = sys::ggml_backend_dev_supports_op(dev, op);
        (*weight).buffer = std::ptr::null_mut();
        sys::ggml_backend_buffer_free(dummy);
        supported
    }
}

/// Which weights to choose for `CPU_REPACK`.
pub(crate) enum RepackScope<'a> {
    /// Those llama.cpp's loader would choose (a model that fits): when in doubt about one,
    /// the whole choice is [`Repacking::Unsure`].
    AsLlamaCpp,
    /// Of these weights (those a tiered model keeps in RAM, where hypura places every weight
    /// itself), the ones whose product the CPU runs in the repacked layout; a weight in doubt
    /// (a tied head, an operation the name does not say, another extra type) stays plain, and
    /// the choice is never `Unsure`.
    Resident(&'a std::collections::HashSet<&'a str>),
}

/// Decides what goes in `CPU_REPACK` (or `AMX`) for `inventory`'s model with `use_extra_bufts`
/// (llama.cpp's `use_extra_bufts`), on the backends registered now, within `scope`.
/// `gpu_in_use`: the model is loaded with a GPU device, whose pinned host buffer type
/// llama.cpp prefers to the repacked ones for CPU weights (so, as llama.cpp, nothing is
/// repacked then; hypura's own choice for a tiered model's RAM tier stands).
pub(crate) fn plan_repacking(
    inventory: &ModelInventory,
    use_extra_bufts: bool,
    scope: RepackScope<'_>,
    gpu_in_use: bool,
) -> Repacking {
    if gpu_in_use && matches!(scope, RepackScope::AsLlamaCpp) {
        return Repacking::Nothing;
    }
    match (plan_within(inventory, use_extra_bufts, &scope), scope) {
        (Repacking::Unsure(_), RepackScope::Resident(_)) => Repacking::Nothing,
        (choice, _) => choice,
    }
}

fn plan_within(
    inventory: &ModelInventory,
    use_extra_bufts: bool,
    scope: &RepackScope<'_>,
) -> Repacking {
    // A doubt about one weight: the whole choice is unsure, or that weight stays plain.
    macro_rules! doubt {
        ($why:expr) => {
            match scope {
                RepackScope::AsLlamaCpp => return Repacking::Unsure($why),
                RepackScope::Resident(_) => continue,
            }
        };
    }
    if !use_extra_bufts {
        return Repacking::Nothing;
    }
    // An accelerator's buffer types come first in llama.cpp's list for CPU weights. A GPU's
    // come into it only when the model is loaded with that GPU (hypura names its devices).
    // SAFETY: registry lookups.
    let accelerator = unsafe {
        (0..sys::ggml_backend_dev_count()).any(|i| {
            sys::ggml_backend_dev_type(sys::ggml_backend_dev_get(i))
                == sys::GGML_BACKEND_DEVICE_TYPE_ACCEL
        })
    };
    if accelerator {
        return Repacking::Unsure("an accelerator device is registered".into());
    }
    let Some(cpu_dev) = cpu::cpu_device() else {
        return Repacking::Unsure("no CPU device".into());
    };
    let mut extra = Vec::new();
    // SAFETY: the CPU backend's documented procedure with its signature; it returns a
    // NULL-terminated array of static buffer types.
    unsafe {
        if let Some(get) = cpu::cpu_procedure::<GetExtraBufts>(c"ggml_backend_dev_get_extra_bufts")
        {
            let mut list = get(cpu_dev);
            while !list.is_null() && !(*list).is_null() {
                extra.push(*list);
                list = list.add(1);
            }
        }
    }
    let filled = |b: sys::ggml_backend_buffer_type_t| {
        // SAFETY: buffer type names are static NUL-terminated strings.
        let name = unsafe { CStr::from_ptr(sys::ggml_backend_buft_name(b)) };
        FILLED_BUFT_NAMES.contains(&name)
    };
    if !extra.iter().any(|&b| filled(b)) {
        return if extra.is_empty() {
            Repacking::Nothing
        } else {
            Repacking::Unsure("the CPU backend has extra buffer types but no CPU_REPACK".into())
        };
    }
    let n_used = inventory.n_expert_used.clamp(1, 1 << 16) as i64;
    let mut groups: Vec<RepackGroup> = Vec::new();
    let head_is_embedding = inventory.tied_head;
    for t in inventory.tensors.iter().filter(|t| !inventory.is_unused(t)) {
        let info = &t.info;
        if let RepackScope::Resident(resident) = scope {
            if !resident.contains(info.name.as_str()) {
                continue;
            }
        }
        let n_dims = info.dims.len();
        // The tied head is a second copy of the embedding, multiplied as the head.
        let role = if head_is_embedding && t.role == Role::Embedding {
            Role::Output
        } else {
            t.role
        };
        // An unknown operation is tested as a product: if the repacked layout would serve
        // one, hypura cannot tell whether llama.cpp would use it.
        let known = weight_op(role, &info.name, n_dims);
        let op = match known {
            Some(WeightOp::Other) => continue,
            Some(op) => op,
            None => WeightOp::MatMul,
        };
        let ggml_type: sys::ggml_type = info.ggml_type;
        let mut ne = [1i64; 4];
        for (d, n) in ne.iter_mut().zip(&info.dims) {
            *d = i64::try_from(*n).unwrap_or(i64::MAX);
        }
        if op == WeightOp::ExpertMatMul && ne[3] != 1 {
            doubt!(format!("expert tensor {} has four dimensions", info.name));
        }
        let Some(ctx) = MetaContext::new(8) else {
            return Repacking::Unsure("ggml could not make a context".into());
        };
        // SAFETY: stand-in tensors of a validated weight's type and shape (llama.cpp makes
        // the same for its own test) in a no-alloc context alive for this iteration.
        let (chosen, alloc_bytes, plain_bytes) = unsafe {
            let w = sys::ggml_new_tensor(ctx.0, ggml_type, n_dims as i32, ne.as_ptr());
            let op_tensor = match op {
                WeightOp::MatMul => {
                    let b = sys::ggml_new_tensor_4d(
                        ctx.0,
                        sys::GGML_TYPE_F32,
                        ne[0],
                        512,
                        ne[2],
                        ne[3],
                    );
                    sys::ggml_mul_mat(ctx.0, w, b)
                }
                _ => {
                    let b = sys::ggml_new_tensor_3d(ctx.0, sys::GGML_TYPE_F32, ne[0], n_used, 512);
                    let ids = sys::ggml_new_tensor_2d(ctx.0, sys::GGML_TYPE_I32, n_used, 512);
                    sys::ggml_mul_mat_id(ctx.0, w, b, ids)
                }
            };
            let chosen = extra
                .iter()
                .copied()
                .find(|&b| supported_in(cpu_dev, b, w, op_tensor));
            let alloc = chosen.map_or(0, |b| sys::ggml_backend_buft_get_alloc_size(b, w));
            (chosen, alloc, sys::ggml_nbytes(w))
        };
        let Some(buft) = chosen else { continue };
        if !filled(buft) {
            doubt!(format!(
                "llama.cpp would keep {} in {}, which hypura does not fill",
                info.name,
                buft_name(buft)
            ));
        }
        // hypura budgets a weight at its size in the file (AMX stores some types larger).
        if alloc_bytes != plain_bytes {
            doubt!(format!(
                "llama.cpp would keep {} in {}, larger than in the file",
                info.name,
                buft_name(buft)
            ));
        }
        if known.is_none() {
            doubt!(format!(
                "hypura cannot tell which operation {} serves",
                info.name
            ));
        }
        if role != t.role {
            doubt!("the tied LM head would be repacked".to_string());
        }
        if !info
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            doubt!(format!(
                "tensor name {:?} has unusual characters",
                info.name
            ));
        }
        match groups.iter_mut().find(|g| g.buft == buft) {
            Some(g) => {
                g.names.insert(info.name.clone());
            }
            None => groups.push(RepackGroup {
                buft,
                names: BTreeSet::from([info.name.clone()]),
            }),
        }
    }
    if groups.is_empty() {
        Repacking::Nothing
    } else {
        Repacking::Some(groups)
    }
}

/// Regular expressions (std::regex, ECMAScript) matching exactly `names`, few of them: one per
/// name outside the layers, one per name within a layer (`blk.N.` + rest) listing its layers.
/// llama.cpp compiles every override for every tensor, so the count matters.
pub(crate) fn exact_name_patterns(names: &BTreeSet<String>) -> Vec<String> {
    // Names hold only ASCII letters, digits, '.', '_' and '-' (checked when chosen): only
    // the dot means something outside a bracket.
    let escape = |s: &str| s.replace('.', "\\.");
    let mut by_rest: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    let mut patterns = Vec::new();
    for name in names {
        let layered = name
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match layered {
            Some((layer, rest)) => by_rest.entry(rest).or_default().push(layer),
            None => patterns.push(format!("^{}$", escape(name))),
        }
    }
    for (rest, layers) in by_rest {
        patterns.push(format!("^blk\\.({})\\.{}$", layers.join("|"), escape(rest)));
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_group_layers_and_escape_dots() {
        let names: BTreeSet<String> = [
            "blk.0.ffn_up.weight",
            "blk.12.ffn_up.weight",
            "blk.3.attn_q.weight",
            "output.weight",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = exact_name_patterns(&names);
        assert_eq!(
            p,
            vec![
                "^output\\.weight$".to_string(),
                "^blk\\.(3)\\.attn_q\\.weight$".to_string(),
                "^blk\\.(0|12)\\.ffn_up\\.weight$".to_string(),
            ]
        );
    }
}
