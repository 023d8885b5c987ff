//! Every error path of the C API, called as C would call it.

use std::ffi::{c_char, CString};
use std::path::PathBuf;
use std::ptr::{null, null_mut};

use hypura::*;
use hypura_status::*;

fn model_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("HYPURA_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/test.sh",
        path.display()
    );
    path
}

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 4096];
    let mut len = 0usize;
    // SAFETY: a buffer of the stated capacity.
    let status = unsafe { hypura_last_error(buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(status, HYPURA_STATUS_OK);
    String::from_utf8(buf[..len].iter().map(|&c| c as u8).collect()).unwrap()
}

/// Parameters for `path` with 2 threads and a 64-token context; freed on drop.
struct Params(*mut hypura_params);

impl Params {
    fn new(path: &str) -> Self {
        let mut p = null_mut();
        // SAFETY: a writable pointer.
        assert_eq!(unsafe { hypura_params_new(&mut p) }, HYPURA_STATUS_OK);
        let c_path = CString::new(path).unwrap();
        // SAFETY: a live params object and a NUL-terminated string (copied).
        unsafe {
            assert_eq!(
                hypura_params_set_model_path(p, c_path.as_ptr()),
                HYPURA_STATUS_OK
            );
            assert_eq!(hypura_params_set_threads(p, 2), HYPURA_STATUS_OK);
            assert_eq!(hypura_params_set_context_length(p, 64), HYPURA_STATUS_OK);
        }
        Self(p)
    }
}

impl Drop for Params {
    fn drop(&mut self) {
        // SAFETY: from hypura_params_new, freed once.
        unsafe { hypura_params_free(self.0) };
    }
}

fn load(p: &Params) -> (hypura_status, *mut hypura_model) {
    let mut model = std::ptr::dangling_mut::<hypura_model>(); // must be reset to NULL on failure
                                                              // SAFETY: valid pointers.
    let status = unsafe { hypura_load(p.0, &mut model) };
    (status, model)
}

/// `tokens` as one batch of sequence 0, logits asked for the last.
fn prompt_batch(tokens: &[i32]) -> Vec<hypura_batch_token> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| hypura_batch_token {
            token: t,
            seq_id: 0,
            logits: i + 1 == tokens.len(),
        })
        .collect()
}

fn stats(model: *const hypura_model) -> hypura_stats {
    let mut s = hypura_stats::default();
    // SAFETY: a live model and a struct of the size passed.
    let status = unsafe { hypura_get_stats(model, &mut s, std::mem::size_of::<hypura_stats>()) };
    assert_eq!(status, HYPURA_STATUS_OK);
    s
}

#[test]
fn load_errors_leave_null_and_a_message() {
    let cases: Vec<(String, hypura_status, &str)> = vec![
        (
            "/nonexistent/x.gguf".into(),
            HYPURA_STATUS_NOT_FOUND,
            "not found",
        ),
        (
            std::env::temp_dir().to_string_lossy().into_owned(),
            HYPURA_STATUS_UNREADABLE,
            "cannot read",
        ),
    ];
    for (path, want, needle) in cases {
        let p = Params::new(&path);
        let (status, model) = load(&p);
        assert_eq!(status, want, "{path}");
        assert!(model.is_null());
        assert!(last_error().contains(needle), "{}", last_error());
    }
    // a corrupt file
    let corrupt =
        std::env::temp_dir().join(format!("hypura-capi-corrupt-{}.gguf", std::process::id()));
    let mut bytes = std::fs::read(model_path("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&corrupt, &bytes).unwrap();
    let p = Params::new(corrupt.to_str().unwrap());
    assert_eq!(load(&p).0, HYPURA_STATUS_TRUNCATED);
    bytes[0] = b'X';
    std::fs::write(&corrupt, &bytes).unwrap();
    assert_eq!(load(&p).0, HYPURA_STATUS_NOT_GGUF);
    std::fs::remove_file(corrupt).unwrap();
    // a budget below one layer, a GPU budget, bad numbers: each setter checks its value
    let smol = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let p = Params::new(smol.to_str().unwrap());
    // SAFETY: a live params object.
    // The former names (weights only) keep working beside hypura_params_set_weights_budget_*.
    unsafe {
        assert_eq!(
            hypura_params_set_ram_budget_bytes(p.0, 1 << 20),
            HYPURA_STATUS_OK
        );
        assert_eq!(load(&p).0, HYPURA_STATUS_BUDGET_TOO_SMALL);
        assert!(last_error().contains("at least"));
        // A GPU budget needs a GPU device: without a GPU backend, the load says so.
        assert_eq!(
            hypura_params_set_weights_budget_percent(p.0, 100.0),
            HYPURA_STATUS_OK
        );
        assert_eq!(
            hypura_params_set_gpu_budget_bytes(p.0, 1 << 30),
            HYPURA_STATUS_OK
        );
        if !cfg!(any(feature = "cuda", feature = "metal", feature = "vulkan")) {
            assert_eq!(load(&p).0, HYPURA_STATUS_UNSUPPORTED);
            assert!(last_error().contains("no GPU device"), "{}", last_error());
        }
        assert_eq!(hypura_params_set_gpu_budget_bytes(p.0, 0), HYPURA_STATUS_OK);
        assert_eq!(
            hypura_params_set_ram_budget_percent(p.0, f32::NAN),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_params_set_weights_budget_percent(p.0, 0.0),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_params_set_weights_budget_bytes(p.0, 0),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_params_set_context_length(p.0, 0),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        for bad in [0, u32::MAX] {
            assert_eq!(
                hypura_params_set_batch_size(p.0, bad),
                HYPURA_STATUS_INVALID_ARGUMENT
            );
        }
        assert_eq!(
            hypura_params_set_batch_size(null_mut(), 128),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        assert_eq!(hypura_params_set_batch_size(p.0, 512), HYPURA_STATUS_OK);
        assert_eq!(
            hypura_params_set_io_threads(p.0, 100_000),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_params_set_threads(p.0, 100_000),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_params_set_sequences(p.0, 0),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        // a process budget too small for the KV cache and buffers names what needs it
        assert_eq!(
            hypura_params_set_memory_budget_bytes(p.0, 1 << 20),
            HYPURA_STATUS_OK
        );
        assert_eq!(load(&p).0, HYPURA_STATUS_BUDGET_TOO_SMALL);
        assert!(last_error().contains("KV cache"), "{}", last_error());
    }
    // no model path
    let mut bare = null_mut();
    // SAFETY: a writable pointer; then a live params object.
    unsafe {
        assert_eq!(hypura_params_new(&mut bare), HYPURA_STATUS_OK);
        let mut model = null_mut();
        assert_eq!(hypura_load(bare, &mut model), HYPURA_STATUS_NULL_ARGUMENT);
        assert!(model.is_null());
        hypura_params_free(bare);
    }
}

#[test]
fn null_arguments_are_reported_not_crashed() {
    // SAFETY: every call passes NULL where the API must detect it.
    unsafe {
        assert_eq!(hypura_params_new(null_mut()), HYPURA_STATUS_NULL_ARGUMENT);
        assert_eq!(
            hypura_params_set_model_path(null_mut(), c"x".as_ptr()),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        let p = Params::new("x");
        assert_eq!(
            hypura_params_set_model_path(p.0, null()),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        assert_eq!(hypura_load(null(), null_mut()), HYPURA_STATUS_NULL_ARGUMENT);
        let mut model = null_mut();
        assert_eq!(hypura_load(null(), &mut model), HYPURA_STATUS_NULL_ARGUMENT);
        assert!(model.is_null());
        hypura_params_free(null_mut());
        let mut n = 0usize;
        assert_eq!(hypura_n_vocab(null(), &mut n), HYPURA_STATUS_NULL_ARGUMENT);
        assert_eq!(
            hypura_tokenize(null(), c"a".as_ptr(), 1, true, null_mut(), 0, &mut n),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        assert_eq!(
            hypura_detokenize(null(), null(), 0, null_mut(), 0, &mut n),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        assert_eq!(
            hypura_decode(null_mut(), null(), 0, null_mut(), 0, &mut n),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        assert_eq!(hypura_reset(null_mut(), -1), HYPURA_STATUS_NULL_ARGUMENT);
        let mut t = 0;
        assert_eq!(
            hypura_sample(null_mut(), null(), 0, 0.0, 1.0, &mut t),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        let mut b = false;
        assert_eq!(
            hypura_is_eog(null(), 0, &mut b),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        assert_eq!(
            hypura_get_stats(null(), null_mut(), 0),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        assert_eq!(
            hypura_context_length(null(), &mut n),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        assert!(last_error().contains("NULL"));
        // freeing NULL, twice, is fine
        hypura_model_free(null_mut());
        hypura_model_free(null_mut());
    }
}

#[test]
fn misuse_of_a_loaded_model() {
    let smol = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let p = Params::new(smol.to_str().unwrap());
    // SAFETY: a live params object.
    unsafe {
        assert_eq!(
            hypura_params_set_weights_budget_percent(p.0, 25.0),
            HYPURA_STATUS_OK
        );
        assert_eq!(hypura_params_set_context_length(p.0, 16), HYPURA_STATUS_OK);
    }
    let (status, model) = load(&p);
    assert_eq!(status, HYPURA_STATUS_OK, "{}", last_error());
    // SAFETY: `model` is live until freed at the end; buffers have the stated sizes.
    unsafe {
        let mut n_vocab = 0usize;
        assert_eq!(hypura_n_vocab(model, &mut n_vocab), HYPURA_STATUS_OK);
        assert_eq!(n_vocab, 49152);

        // tokenize: too small, then right; NULL text with length; invalid UTF-8
        let text = "The capital of France is";
        let mut n = 0usize;
        let mut tokens = vec![0i32; 64];
        assert_eq!(
            hypura_tokenize(
                model,
                text.as_ptr().cast(),
                text.len(),
                true,
                tokens.as_mut_ptr(),
                1,
                &mut n
            ),
            HYPURA_STATUS_BUFFER_TOO_SMALL
        );
        assert!(n > 1);
        assert_eq!(
            hypura_tokenize(
                model,
                text.as_ptr().cast(),
                text.len(),
                true,
                tokens.as_mut_ptr(),
                tokens.len(),
                &mut n
            ),
            HYPURA_STATUS_OK
        );
        assert_eq!(
            hypura_tokenize(
                model,
                null(),
                3,
                true,
                tokens.as_mut_ptr(),
                tokens.len(),
                &mut n
            ),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        let bad = [0xffu8, 0xfe];
        assert_eq!(
            hypura_tokenize(
                model,
                bad.as_ptr().cast(),
                2,
                true,
                tokens.as_mut_ptr(),
                tokens.len(),
                &mut n
            ),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_tokenize(
                model,
                text.as_ptr().cast(),
                text.len(),
                true,
                tokens.as_mut_ptr(),
                tokens.len(),
                &mut n
            ),
            HYPURA_STATUS_OK
        );
        let prompt = &tokens[..n];

        // detokenize round trip; buffer too small reports the length needed
        let mut buf = vec![0 as c_char; 256];
        let mut len = 0usize;
        assert_eq!(
            hypura_detokenize(
                model,
                prompt.as_ptr(),
                prompt.len(),
                buf.as_mut_ptr(),
                3,
                &mut len
            ),
            HYPURA_STATUS_BUFFER_TOO_SMALL
        );
        assert!(len >= text.len());
        assert_eq!(
            hypura_detokenize(
                model,
                prompt.as_ptr(),
                prompt.len(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut len
            ),
            HYPURA_STATUS_OK
        );
        let round: String = buf[..len].iter().map(|&c| c as u8 as char).collect();
        assert!(round.ends_with(text), "{round}");
        let out_of_vocab = [1_000_000i32];
        assert_eq!(
            hypura_detokenize(
                model,
                out_of_vocab.as_ptr(),
                1,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len
            ),
            HYPURA_STATUS_INVALID_ARGUMENT
        );

        // decode: logits buffer too small (nothing decoded), bad token, bad sequence, then OK
        let batch = prompt_batch(prompt);
        let mut logits = vec![0f32; n_vocab];
        let mut n_out = 0usize;
        assert_eq!(
            hypura_decode(
                model,
                batch.as_ptr(),
                batch.len(),
                logits.as_mut_ptr(),
                10,
                &mut n_out
            ),
            HYPURA_STATUS_BUFFER_TOO_SMALL
        );
        assert_eq!(n_out, 1);
        assert_eq!(
            hypura_decode(
                model,
                batch.as_ptr(),
                0,
                logits.as_mut_ptr(),
                logits.len(),
                &mut n_out
            ),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        let bad_token = [hypura_batch_token {
            token: -5,
            seq_id: 0,
            logits: true,
        }];
        assert_eq!(
            hypura_decode(
                model,
                bad_token.as_ptr(),
                1,
                logits.as_mut_ptr(),
                logits.len(),
                &mut n_out
            ),
            HYPURA_STATUS_DECODE_FAILED
        );
        let bad_seq = [hypura_batch_token {
            token: prompt[0],
            seq_id: 3,
            logits: true,
        }];
        assert_eq!(
            hypura_decode(
                model,
                bad_seq.as_ptr(),
                1,
                logits.as_mut_ptr(),
                logits.len(),
                &mut n_out
            ),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert!(last_error().contains("sequence 3"));
        assert_eq!(
            hypura_decode(
                model,
                batch.as_ptr(),
                batch.len(),
                logits.as_mut_ptr(),
                logits.len(),
                &mut n_out
            ),
            HYPURA_STATUS_OK
        );
        assert!(logits.iter().all(|v| v.is_finite()) && logits.iter().any(|&v| v != 0.0));

        // sample: greedy is the argmax; invalid arguments
        let mut token = 0;
        assert_eq!(
            hypura_sample(model, logits.as_ptr(), logits.len(), 0.0, 1.0, &mut token),
            HYPURA_STATUS_OK
        );
        let argmax = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0;
        assert_eq!(token as usize, argmax);
        assert_eq!(
            hypura_sample(model, logits.as_ptr(), 0, 0.0, 1.0, &mut token),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_sample(
                model,
                logits.as_ptr(),
                logits.len(),
                f32::NAN,
                1.0,
                &mut token
            ),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_sample(model, logits.as_ptr(), logits.len(), 0.8, 0.9, &mut token),
            HYPURA_STATUS_OK
        );

        // decode past the context: refused, and the sequence is left as it was
        let mut positions = 0usize;
        assert_eq!(
            hypura_context_length(model, &mut positions),
            HYPURA_STATUS_OK
        );
        assert!(positions >= 16);
        let held = prompt.len();
        let filler = vec![
            hypura_batch_token {
                token: prompt[1],
                seq_id: 0,
                logits: false
            };
            positions + 1
        ];
        assert_eq!(
            hypura_decode(
                model,
                filler.as_ptr(),
                positions - held + 1,
                null_mut(),
                0,
                &mut n_out
            ),
            HYPURA_STATUS_CONTEXT_FULL
        );
        assert!(last_error().contains("context is full"));
        let one = [hypura_batch_token {
            token,
            seq_id: 0,
            logits: true,
        }];
        assert_eq!(
            hypura_decode(
                model,
                one.as_ptr(),
                1,
                logits.as_mut_ptr(),
                logits.len(),
                &mut n_out
            ),
            HYPURA_STATUS_OK
        );
        assert_eq!(hypura_reset(model, 7), HYPURA_STATUS_INVALID_ARGUMENT);
        assert_eq!(hypura_reset(model, 0), HYPURA_STATUS_OK);
        assert_eq!(
            hypura_decode(model, filler.as_ptr(), positions, null_mut(), 0, &mut n_out),
            HYPURA_STATUS_OK
        );
        assert_eq!(
            hypura_decode(model, filler.as_ptr(), 1, null_mut(), 0, &mut n_out),
            HYPURA_STATUS_CONTEXT_FULL
        );

        // statistics; a caller with a shorter (older) struct gets only the fields it knows
        let stats = stats(model);
        let mut short = [0u64; 2];
        assert_eq!(
            hypura_get_stats(model, short.as_mut_ptr().cast(), 16),
            HYPURA_STATUS_OK
        );
        assert_eq!(short, [stats.model_bytes, stats.ram_budget_bytes]);
        assert!(stats.ram_resident_bytes > 0 && stats.ram_resident_bytes < stats.model_bytes);
        assert!(stats.nvme_streamed_bytes_per_token > 0);
        assert!(stats.bytes_read > 0 && stats.tokens_decoded > 0 && stats.tokens_per_second > 0.0);
        assert_eq!(stats.gpu_resident_bytes, 0);

        // the message buffer: too small reports the length needed
        let mut len = 0usize;
        let mut tiny = [0 as c_char; 4];
        assert_eq!(
            hypura_last_error(tiny.as_mut_ptr(), tiny.len(), &mut len),
            HYPURA_STATUS_BUFFER_TOO_SMALL
        );
        assert!(len > 4);
        assert_eq!(
            hypura_last_error(null_mut(), 0, &mut len),
            HYPURA_STATUS_BUFFER_TOO_SMALL
        );
        hypura_model_free(model);
    }
}

#[test]
fn two_sequences_decode_side_by_side() {
    let smol = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let p = Params::new(smol.to_str().unwrap());
    // SAFETY: a live params object.
    unsafe {
        assert_eq!(
            hypura_params_set_weights_budget_percent(p.0, 50.0),
            HYPURA_STATUS_OK
        );
        assert_eq!(hypura_params_set_sequences(p.0, 2), HYPURA_STATUS_OK);
        assert_eq!(hypura_params_set_context_length(p.0, 128), HYPURA_STATUS_OK);
    }
    let (status, model) = load(&p);
    assert_eq!(status, HYPURA_STATUS_OK, "{}", last_error());
    // SAFETY: a live model and buffers of the stated sizes.
    unsafe {
        let mut n_vocab = 0usize;
        hypura_n_vocab(model, &mut n_vocab);
        let mut tokens = vec![0i32; 32];
        let mut n = 0usize;
        let text = "Once upon a time";
        assert_eq!(
            hypura_tokenize(
                model,
                text.as_ptr().cast(),
                text.len(),
                true,
                tokens.as_mut_ptr(),
                32,
                &mut n
            ),
            HYPURA_STATUS_OK
        );
        let prompt = &tokens[..n];
        // one sequence alone
        let alone: Vec<_> = prompt
            .iter()
            .enumerate()
            .map(|(i, &t)| hypura_batch_token {
                token: t,
                seq_id: 0,
                logits: i + 1 == n,
            })
            .collect();
        let mut single = vec![0f32; n_vocab];
        let mut n_out = 0;
        assert_eq!(
            hypura_decode(
                model,
                alone.as_ptr(),
                n,
                single.as_mut_ptr(),
                n_vocab,
                &mut n_out
            ),
            HYPURA_STATUS_OK
        );
        assert_eq!(hypura_reset(model, -1), HYPURA_STATUS_OK);
        // the same prompt in sequences 0 and 1 of one batch: both get the same logits
        let mut both: Vec<hypura_batch_token> = Vec::new();
        for seq in 0..2 {
            both.extend(prompt.iter().enumerate().map(|(i, &t)| hypura_batch_token {
                token: t,
                seq_id: seq,
                logits: i + 1 == n,
            }));
        }
        let mut pair = vec![0f32; 2 * n_vocab];
        assert_eq!(
            hypura_decode(
                model,
                both.as_ptr(),
                both.len(),
                pair.as_mut_ptr(),
                pair.len(),
                &mut n_out
            ),
            HYPURA_STATUS_OK
        );
        assert_eq!(n_out, 2);
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
                .0
        };
        assert_eq!(argmax(&pair[..n_vocab]), argmax(&single));
        assert_eq!(argmax(&pair[n_vocab..]), argmax(&single));
        hypura_model_free(model);
    }
}

/// A model on a private copy of SmolLM2 at 10% (so it streams), and that copy's path.
fn streaming_copy(name: &str) -> (std::path::PathBuf, Vec<u8>, *mut hypura_model) {
    let original = std::fs::read(model_path("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let copy = std::env::temp_dir().join(format!("hypura-capi-{name}-{}.gguf", std::process::id()));
    std::fs::write(&copy, &original).unwrap();
    let p = Params::new(copy.to_str().unwrap());
    // SAFETY: a live params object.
    let status = unsafe { hypura_params_set_weights_budget_percent(p.0, 10.0) };
    assert_eq!(status, HYPURA_STATUS_OK);
    let (status, model) = load(&p);
    assert_eq!(status, HYPURA_STATUS_OK, "{}", last_error());
    (copy, original, model)
}

/// Decodes one token (id 1) into sequence 0 after a reset; returns the status and logits.
fn step(model: *mut hypura_model) -> (hypura_status, Vec<f32>) {
    let mut n_vocab = 0usize;
    let one = [hypura_batch_token {
        token: 1,
        seq_id: 0,
        logits: true,
    }];
    // SAFETY: a live model and buffers of the stated sizes.
    unsafe {
        hypura_n_vocab(model, &mut n_vocab);
        let mut logits = vec![0f32; n_vocab];
        let mut n_out = 0usize;
        let reset = hypura_reset(model, -1);
        if reset != HYPURA_STATUS_OK {
            return (reset, Vec::new());
        }
        let status = hypura_decode(
            model,
            one.as_ptr(),
            1,
            logits.as_mut_ptr(),
            n_vocab,
            &mut n_out,
        );
        (status, logits)
    }
}

#[test]
fn a_model_file_changed_under_a_running_model_is_detected_and_never_used() {
    for change in ["truncated", "overwritten", "overwritten-same-mtime"] {
        let (copy, original, model) = streaming_copy(change);
        let (status, expected) = step(model);
        assert_eq!(status, HYPURA_STATUS_OK, "{}", last_error());
        let file = std::fs::File::options().write(true).open(&copy).unwrap();
        let mtime = file.metadata().unwrap().modified().unwrap();
        match change {
            "truncated" => file.set_len(2 << 20).unwrap(),
            _ => {
                // Every weight byte after the header changes, the size stays.
                use std::os::unix::fs::FileExt;
                let garbage = vec![0x5au8; original.len() - (2 << 20)];
                file.write_all_at(&garbage, 2 << 20).unwrap();
                if change == "overwritten-same-mtime" {
                    // Hide the change from the size/time check: the checksums still see it.
                    file.set_modified(mtime).unwrap();
                }
            }
        }
        drop(file);
        let (status, _) = step(model);
        assert_eq!(
            status,
            HYPURA_STATUS_MODEL_FILE_CHANGED,
            "{change}: {}",
            last_error()
        );
        assert!(
            last_error().contains("model file changed while running"),
            "{}",
            last_error()
        );
        // It stays refused, even once the file is back: the model must be loaded again.
        std::fs::write(&copy, &original).unwrap();
        assert_eq!(step(model).0, HYPURA_STATUS_MODEL_FILE_CHANGED, "{change}");
        // SAFETY: freed once.
        unsafe { hypura_model_free(model) };
        let p = Params::new(copy.to_str().unwrap());
        // SAFETY: a live params object.
        unsafe { hypura_params_set_weights_budget_percent(p.0, 10.0) };
        let (status, fresh) = load(&p);
        assert_eq!(status, HYPURA_STATUS_OK, "{}", last_error());
        assert_eq!(
            step(fresh),
            (HYPURA_STATUS_OK, expected),
            "{change}: reloaded"
        );
        // SAFETY: freed once.
        unsafe { hypura_model_free(fresh) };
        std::fs::remove_file(copy).unwrap();
    }
}

#[test]
fn a_file_replaced_by_rename_keeps_working_from_the_open_handle() {
    let (copy, original, model) = streaming_copy("renamed");
    let (status, expected) = step(model);
    assert_eq!(status, HYPURA_STATUS_OK, "{}", last_error());
    let other = copy.with_extension("other");
    let mut garbage = original.clone();
    garbage[2 << 20..].iter_mut().for_each(|b| *b = 0x5a);
    std::fs::write(&other, garbage).unwrap();
    std::fs::rename(&other, &copy).unwrap();
    assert_eq!(step(model), (HYPURA_STATUS_OK, expected));
    // SAFETY: freed once.
    unsafe { hypura_model_free(model) };
    std::fs::remove_file(copy).unwrap();
}

#[test]
fn a_second_thread_on_a_busy_model_gets_busy_never_a_crash() {
    let (copy, _, model) = streaming_copy("busy");
    let handle = model as usize;
    let busy_seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::clone(&busy_seen);
    let worker = std::thread::spawn(move || {
        let model = handle as *mut hypura_model;
        let started = std::time::Instant::now();
        let mut statuses = Vec::new();
        while !seen.load(std::sync::atomic::Ordering::SeqCst)
            && started.elapsed() < std::time::Duration::from_secs(60)
        {
            statuses.push(step(model).0);
        }
        statuses
    });
    let mut other = Vec::new();
    let started = std::time::Instant::now();
    while !busy_seen.load(std::sync::atomic::Ordering::SeqCst)
        && started.elapsed() < std::time::Duration::from_secs(60)
    {
        let (status, _) = step_once(model);
        if status == HYPURA_STATUS_BUSY {
            assert!(last_error().contains("another thread"), "{}", last_error());
            busy_seen.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        other.push(status);
    }
    let mine = worker.join().unwrap();
    for s in mine.iter().chain(&other) {
        assert!(
            matches!(
                s,
                HYPURA_STATUS_OK | HYPURA_STATUS_BUSY | HYPURA_STATUS_CONTEXT_FULL
            ),
            "unexpected status {s:?}"
        );
    }
    assert!(
        busy_seen.load(std::sync::atomic::Ordering::SeqCst),
        "no call was ever busy"
    );
    // Reads of fixed facts are never busy, and the model still works.
    let mut n = 0usize;
    // SAFETY: a live model.
    assert_eq!(unsafe { hypura_n_vocab(model, &mut n) }, HYPURA_STATUS_OK);
    assert_eq!(step(model).0, HYPURA_STATUS_OK);
    // SAFETY: freed once, after the other thread finished.
    unsafe { hypura_model_free(model) };
    std::fs::remove_file(copy).unwrap();
}

/// One decode without a reset first (a reset may itself be busy).
fn step_once(model: *mut hypura_model) -> (hypura_status, ()) {
    let one = [hypura_batch_token {
        token: 1,
        seq_id: 0,
        logits: false,
    }];
    let mut n_out = 0usize;
    // SAFETY: a live model; no logits asked, so none are written.
    let status = unsafe { hypura_decode(model, one.as_ptr(), 1, null_mut(), 0, &mut n_out) };
    (status, ())
}

#[test]
fn expert_counters_and_profiles_through_the_c_api() {
    // An MoE built from SmolLM2 (4 copies of each FFN, 2 picked by a random router).
    let moe = std::env::temp_dir().join(format!("hypura-capi-moe-{}.gguf", std::process::id()));
    hypura_tools::synth::moe_from(&model_path("SmolLM2-135M-Instruct.Q4_1.gguf"), &moe, 4, 2)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("hypura-capi-profiles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let p = Params::new(moe.to_str().unwrap());
    let c_dir = CString::new(dir.to_str().unwrap()).unwrap();
    let empty = CString::new("").unwrap();
    // SAFETY: a live params object; NULL, an empty and a real NUL-terminated path.
    unsafe {
        assert_eq!(
            hypura_params_set_expert_profiles(null_mut(), c_dir.as_ptr()),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        assert_eq!(
            hypura_params_set_expert_profiles(p.0, empty.as_ptr()),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_params_set_expert_profiles(p.0, null()),
            HYPURA_STATUS_OK
        );
        assert_eq!(
            hypura_params_set_expert_profiles(p.0, c_dir.as_ptr()),
            HYPURA_STATUS_OK
        );
        assert_eq!(
            hypura_params_set_weights_budget_percent(p.0, 25.0),
            HYPURA_STATUS_OK
        );
        assert_eq!(
            hypura_save_expert_profile(null()),
            HYPURA_STATUS_NULL_ARGUMENT
        );
    }
    let (status, model) = load(&p);
    assert_eq!(status, HYPURA_STATUS_OK, "{}", last_error());
    let batch = prompt_batch(&[1, 504, 3458, 282, 4649, 314]);
    let mut logits = vec![0f32; 49152];
    let mut n_out = 0usize;
    // SAFETY: a live model, a batch and a logits buffer of the sizes passed.
    let status = unsafe {
        hypura_decode(
            model,
            batch.as_ptr(),
            batch.len(),
            logits.as_mut_ptr(),
            logits.len(),
            &mut n_out,
        )
    };
    assert_eq!(status, HYPURA_STATUS_OK, "{}", last_error());
    let s = stats(model);
    assert!(s.expert_cache_bytes > 0, "no expert cache at 25%");
    // The prompt's one batch read the experts its router picked, and counted them.
    assert!(s.expert_misses > 0 && s.expert_bytes_read > 0, "{s:?}");
    assert!(s.expert_prefetch_wasted_bytes <= s.expert_prefetch_bytes);
    // SAFETY: a live model.
    let saved = unsafe { hypura_save_expert_profile(model) };
    assert_eq!(saved, HYPURA_STATUS_OK, "{}", last_error());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "one profile saved"
    );
    // SAFETY: from hypura_load, freed once.
    unsafe { hypura_model_free(model) };
    // A second load starts from it.
    let (status, model) = load(&p);
    assert_eq!(status, HYPURA_STATUS_OK, "{}", last_error());
    // SAFETY: from hypura_load, freed once.
    unsafe { hypura_model_free(model) };
    drop(p);
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_file(moe).unwrap();
}

/// What the engine's callback collects: each request's text, and how it ended.
#[derive(Default)]
struct Collected {
    texts: std::collections::HashMap<u64, String>,
    ended: std::collections::HashMap<u64, (hypura_stop_reason, usize, usize)>,
    nested_status: Option<hypura_status>,
    model: usize,
}

unsafe extern "C" fn collect(user: *mut std::ffi::c_void, event: *const hypura_event) {
    // SAFETY: the test passes a live Collected; the event is valid during the call.
    let (c, e) = unsafe { (&mut *user.cast::<Collected>(), &*event) };
    match e.kind {
        hypura_event_kind::HYPURA_EVENT_TEXT => {
            // SAFETY: `text_len` bytes of UTF-8 at `text`, valid during the call.
            let bytes = unsafe { std::slice::from_raw_parts(e.text.cast::<u8>(), e.text_len) };
            c.texts
                .entry(e.request_id)
                .or_default()
                .push_str(std::str::from_utf8(bytes).expect("whole UTF-8 characters"));
        }
        hypura_event_kind::HYPURA_EVENT_FINISHED => {
            c.ended.insert(
                e.request_id,
                (e.stop_reason, e.prompt_tokens, e.generated_tokens),
            );
        }
    }
    // A call on the same model from inside the callback is refused, never deadlocks.
    let mut running = 0usize;
    // SAFETY: the live model the test stepped.
    c.nested_status = Some(unsafe {
        hypura_step(
            c.model as *mut hypura_model,
            Some(collect),
            user,
            &mut running,
            null_mut(),
        )
    });
}

/// Request settings: `tokens` at most, sampled at temperature 0.9 with `seed`; freed by the
/// caller.
fn request(tokens: u32, seed: u64) -> *mut hypura_request_params {
    let mut r = null_mut();
    // SAFETY: writable pointers, a live params object.
    unsafe {
        assert_eq!(hypura_request_params_new(&mut r), HYPURA_STATUS_OK);
        assert_eq!(
            hypura_request_params_set_max_tokens(r, tokens),
            HYPURA_STATUS_OK
        );
        assert_eq!(
            hypura_request_params_set_temperature(r, 0.9),
            HYPURA_STATUS_OK
        );
        assert_eq!(hypura_request_params_set_seed(r, seed), HYPURA_STATUS_OK);
        assert_eq!(
            hypura_request_params_set_stop_at_end_of_generation(r, false),
            HYPURA_STATUS_OK
        );
    }
    r
}

/// Submits `requests` (prompt, seed) and steps until the engine is idle.
fn run_requests(
    model: *mut hypura_model,
    requests: &[(&str, u64)],
    tokens: u32,
) -> (Collected, Vec<u64>) {
    let mut collected = Collected {
        model: model as usize,
        ..Collected::default()
    };
    let mut ids = Vec::new();
    for &(prompt, seed) in requests {
        let r = request(tokens, seed);
        let mut id = u64::MAX;
        // SAFETY: a live model and params, a prompt of the length given.
        let status =
            unsafe { hypura_submit(model, prompt.as_ptr().cast(), prompt.len(), r, &mut id) };
        assert_eq!(status, HYPURA_STATUS_OK, "{}", last_error());
        // SAFETY: from hypura_request_params_new; the request copied what it needs.
        unsafe { hypura_request_params_free(r) };
        ids.push(id);
    }
    loop {
        let (mut running, mut waiting) = (0usize, 0usize);
        // SAFETY: a live model, the callback and its Collected, writable counts.
        let status = unsafe {
            hypura_step(
                model,
                Some(collect),
                (&mut collected as *mut Collected).cast(),
                &mut running,
                &mut waiting,
            )
        };
        assert_eq!(status, HYPURA_STATUS_OK, "{}", last_error());
        if running == 0 && waiting == 0 {
            break;
        }
    }
    (collected, ids)
}

#[test]
fn the_engine_runs_requests_together_as_each_runs_alone() {
    let smol = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let p = Params::new(smol.to_str().unwrap());
    // SAFETY: a live params object.
    unsafe {
        assert_eq!(hypura_params_set_sequences(p.0, 2), HYPURA_STATUS_OK);
        assert_eq!(hypura_params_set_context_length(p.0, 256), HYPURA_STATUS_OK);
        assert_eq!(
            hypura_params_set_weights_budget_percent(p.0, 50.0),
            HYPURA_STATUS_OK
        );
    }
    let (status, model) = load(&p);
    assert_eq!(status, HYPURA_STATUS_OK, "{}", last_error());
    let requests = [
        ("The capital of France is", 10),
        ("Once upon a time", 11),
        ("def add(a, b):", 12),
    ];
    // Three requests on two sequences: the third waits for a free one.
    let (together, ids) = run_requests(model, &requests, 12);
    assert_eq!(together.nested_status, Some(HYPURA_STATUS_BUSY));
    for (i, id) in ids.iter().enumerate() {
        let alone = run_requests(model, &requests[i..=i], 12).0;
        let alone_id = *alone.ended.keys().next().unwrap();
        assert_eq!(
            together.texts[id], alone.texts[&alone_id],
            "request {i}: together and alone differ"
        );
        let (reason, prompt_tokens, generated) = together.ended[id];
        assert_eq!(reason, hypura_stop_reason::HYPURA_STOP_MAX_TOKENS);
        assert!(prompt_tokens > 0);
        assert_eq!(generated, 12);
    }

    // A cancelled request: found once, then gone; low-level decoding waits for the engine.
    let r = request(200, 1);
    let prompt = "A long story";
    let mut id = 0u64;
    let mut found = false;
    // SAFETY: a live model and params; valid pointers.
    unsafe {
        assert_eq!(
            hypura_submit(model, prompt.as_ptr().cast(), prompt.len(), r, &mut id),
            HYPURA_STATUS_OK
        );
        hypura_request_params_free(r);
        let batch = prompt_batch(&[1, 2]);
        let mut logits = vec![0f32; 100_000];
        let mut n_outputs = 0usize;
        assert_eq!(
            hypura_decode(
                model,
                batch.as_ptr(),
                batch.len(),
                logits.as_mut_ptr(),
                logits.len(),
                &mut n_outputs,
            ),
            HYPURA_STATUS_REQUESTS_RUNNING
        );
        assert_eq!(hypura_reset(model, -1), HYPURA_STATUS_REQUESTS_RUNNING);
        assert_eq!(hypura_cancel(model, id, &mut found), HYPURA_STATUS_OK);
        assert!(found);
        assert_eq!(hypura_cancel(model, id, &mut found), HYPURA_STATUS_OK);
        assert!(!found);
        assert_eq!(hypura_reset(model, -1), HYPURA_STATUS_OK);
    }

    // Bad input: one line each, nothing queued.
    let mut id = 0u64;
    let long = "word ".repeat(400);
    let r = request(4, 1);
    // SAFETY: a live model; valid or NULL pointers as each case says.
    unsafe {
        assert_eq!(
            hypura_submit(model, null(), 0, null(), &mut id),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        assert_eq!(
            hypura_submit(model, long.as_ptr().cast(), long.len(), null(), &mut id),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert!(last_error().contains("context"), "{}", last_error());
        let invalid = [0xffu8, 0xfe];
        assert_eq!(
            hypura_submit(model, invalid.as_ptr().cast(), 2, null(), &mut id),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_step(model, None, null_mut(), null_mut(), null_mut()),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        assert_eq!(
            hypura_request_params_set_max_tokens(r, 0),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_request_params_set_top_p(r, 0.0),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_request_params_add_stop(r, invalid.as_ptr().cast(), 2),
            HYPURA_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            hypura_request_params_set_max_tokens(null_mut(), 4),
            HYPURA_STATUS_NULL_ARGUMENT
        );
        hypura_request_params_free(r);
        hypura_request_params_free(null_mut());
        hypura_model_free(model);
    }
}
