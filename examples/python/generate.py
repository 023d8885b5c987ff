#!/usr/bin/env python3
"""Generate text through libhypura's C API from Python (ctypes, standard library only).

    HYPURA_LIB=target/release/libhypura.so python3 examples/python/generate.py \
        models/SmolLM2-135M-Instruct.Q4_1.gguf 25 "The capital of France is" 32 [threads]

Prints only the generated text on stdout.
"""
import ctypes
import os
import sys

HYPURA_STATUS_OK = 0
HYPURA_STATUS_BUFFER_TOO_SMALL = 13


class BatchToken(ctypes.Structure):
    _fields_ = [("token", ctypes.c_int32), ("seq_id", ctypes.c_int32), ("logits", ctypes.c_bool)]


def load_library():
    path = os.environ.get("HYPURA_LIB") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release", "libhypura.so"
    )
    lib = ctypes.CDLL(path)
    size_p = ctypes.POINTER(ctypes.c_size_t)
    model_p = ctypes.c_void_p
    params_p = ctypes.c_void_p
    lib.hypura_params_new.argtypes = [ctypes.POINTER(params_p)]
    lib.hypura_params_free.argtypes = [params_p]
    lib.hypura_params_free.restype = None
    lib.hypura_params_set_model_path.argtypes = [params_p, ctypes.c_char_p]
    lib.hypura_params_set_weights_budget_percent.argtypes = [params_p, ctypes.c_float]
    lib.hypura_params_set_threads.argtypes = [params_p, ctypes.c_uint32]
    lib.hypura_load.argtypes = [params_p, ctypes.POINTER(model_p)]
    lib.hypura_model_free.argtypes = [model_p]
    lib.hypura_model_free.restype = None
    lib.hypura_n_vocab.argtypes = [model_p, size_p]
    lib.hypura_tokenize.argtypes = [model_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_bool,
                                    ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t, size_p]
    lib.hypura_detokenize.argtypes = [model_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t,
                                      ctypes.c_char_p, ctypes.c_size_t, size_p]
    lib.hypura_decode.argtypes = [model_p, ctypes.POINTER(BatchToken), ctypes.c_size_t,
                                  ctypes.POINTER(ctypes.c_float), ctypes.c_size_t, size_p]
    lib.hypura_sample.argtypes = [model_p, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t,
                                  ctypes.c_float, ctypes.c_float, ctypes.POINTER(ctypes.c_int32)]
    lib.hypura_is_eog.argtypes = [model_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_bool)]
    lib.hypura_last_error.argtypes = [ctypes.c_char_p, ctypes.c_size_t, size_p]
    for name in ["hypura_params_new", "hypura_params_set_model_path", "hypura_params_set_weights_budget_percent",
                 "hypura_params_set_threads", "hypura_load", "hypura_n_vocab", "hypura_tokenize",
                 "hypura_detokenize", "hypura_decode", "hypura_sample", "hypura_is_eog", "hypura_last_error"]:
        getattr(lib, name).restype = ctypes.c_uint32
    return lib


def check(lib, status, what):
    if status != HYPURA_STATUS_OK:
        buf = ctypes.create_string_buffer(4096)
        lib.hypura_last_error(buf, len(buf), None)
        sys.exit(f"generate.py: {what} failed (status {status}): {buf.value.decode(errors='replace')}")


def main():
    if len(sys.argv) < 5:
        sys.exit("usage: generate.py MODEL.gguf RAM_BUDGET_PERCENT PROMPT MAX_TOKENS [THREADS]")
    model_path, percent, prompt, max_tokens = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    lib = load_library()
    params = ctypes.c_void_p()
    check(lib, lib.hypura_params_new(ctypes.byref(params)), "hypura_params_new")
    model = ctypes.c_void_p()
    try:
        check(lib, lib.hypura_params_set_model_path(params, model_path.encode()), "hypura_params_set_model_path")
        check(lib, lib.hypura_params_set_weights_budget_percent(params, percent), "hypura_params_set_weights_budget_percent")
        if len(sys.argv) > 5:
            check(lib, lib.hypura_params_set_threads(params, int(sys.argv[5])), "hypura_params_set_threads")
        check(lib, lib.hypura_load(params, ctypes.byref(model)), "hypura_load")
    finally:
        lib.hypura_params_free(params)
    try:
        n_vocab = ctypes.c_size_t()
        check(lib, lib.hypura_n_vocab(model, ctypes.byref(n_vocab)), "hypura_n_vocab")
        text = prompt.encode()
        n = ctypes.c_size_t()
        status = lib.hypura_tokenize(model, text, len(text), True, None, 0, ctypes.byref(n))
        if status not in (HYPURA_STATUS_OK, HYPURA_STATUS_BUFFER_TOO_SMALL):
            check(lib, status, "hypura_tokenize")
        tokens = (ctypes.c_int32 * n.value)()
        check(lib, lib.hypura_tokenize(model, text, len(text), True, tokens, n.value, ctypes.byref(n)), "hypura_tokenize")
        batch = (BatchToken * n.value)(*[BatchToken(t, 0, i + 1 == n.value) for i, t in enumerate(tokens)])
        logits = (ctypes.c_float * n_vocab.value)()
        outputs = ctypes.c_size_t()
        check(lib, lib.hypura_decode(model, batch, n.value, logits, n_vocab.value, ctypes.byref(outputs)), "hypura_decode")
        out = sys.stdout.buffer
        piece = ctypes.create_string_buffer(256)
        for i in range(max_tokens):
            token = ctypes.c_int32()
            check(lib, lib.hypura_sample(model, logits, n_vocab.value, 0.0, 1.0, ctypes.byref(token)), "hypura_sample")
            length = ctypes.c_size_t()
            one = (ctypes.c_int32 * 1)(token.value)
            check(lib, lib.hypura_detokenize(model, one, 1, piece, len(piece), ctypes.byref(length)), "hypura_detokenize")
            out.write(piece.raw[: length.value])
            out.flush()
            eog = ctypes.c_bool()
            lib.hypura_is_eog(model, token, ctypes.byref(eog))
            if eog.value or i + 1 == max_tokens:
                break
            step = (BatchToken * 1)(BatchToken(token.value, 0, True))
            check(lib, lib.hypura_decode(model, step, 1, logits, n_vocab.value, ctypes.byref(outputs)), "hypura_decode")
        out.write(b"\n")
    finally:
        lib.hypura_model_free(model)


if __name__ == "__main__":
    main()
