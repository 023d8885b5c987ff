/* Generate text through libhypura's C API, with part of the model in RAM and the rest
 * streamed from disk. Prints only the generated text on stdout (statistics on stderr).
 *
 *   cc -Wall -Wextra -I include examples/c/generate.c $(pkg-config --cflags --libs hypura) -o generate
 *   ./generate models/SmolLM2-135M-Instruct.Q4_1.gguf 25 "The capital of France is" 32 [threads]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypura.h"

static int report(const char *what, hypura_status status) {
    char message[1024];
    size_t len = 0;
    if (hypura_last_error(message, sizeof message, &len) != HYPURA_STATUS_OK) {
        snprintf(message, sizeof message, "(a %zu-byte message)", len);
    }
    fprintf(stderr, "generate: %s failed (status %u): %s\n", what, (unsigned)status, message);
    return 1;
}

/* Writes one token's text to stdout. */
static int print_token(const hypura_model *model, int32_t token) {
    char piece[256];
    size_t len = 0;
    hypura_status status = hypura_detokenize(model, &token, 1, piece, sizeof piece, &len);
    if (status != HYPURA_STATUS_OK) {
        return report("hypura_detokenize", status);
    }
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL.gguf RAM_BUDGET_PERCENT PROMPT MAX_TOKENS [THREADS]\n", argv[0]);
        return 2;
    }
    const char *prompt = argv[3];
    int max_tokens = atoi(argv[4]);
    int rc = 1;
    hypura_model *model = NULL;
    int32_t *tokens = NULL;
    hypura_batch_token *batch = NULL;
    float *logits = NULL;

    /* Options live in an opaque object with one setter each; every setter checks its value. */
    hypura_params *params = NULL;
    hypura_status status = hypura_params_new(&params);
    if (status == HYPURA_STATUS_OK) status = hypura_params_set_model_path(params, argv[1]);
    if (status == HYPURA_STATUS_OK) status = hypura_params_set_weights_budget_percent(params, (float)atof(argv[2]));
    if (status == HYPURA_STATUS_OK && argc > 5) status = hypura_params_set_threads(params, (uint32_t)atoi(argv[5]));
    if (status != HYPURA_STATUS_OK) {
        hypura_params_free(params);
        return report("hypura_params", status);
    }
    status = hypura_load(params, &model);
    hypura_params_free(params);
    if (status != HYPURA_STATUS_OK) {
        return report("hypura_load", status);
    }
    size_t n_vocab = 0;
    hypura_n_vocab(model, &n_vocab);

    /* Ask for the length first, then tokenize into a buffer of that size. */
    size_t n_prompt = 0;
    status = hypura_tokenize(model, prompt, strlen(prompt), true, NULL, 0, &n_prompt);
    if (status != HYPURA_STATUS_BUFFER_TOO_SMALL && status != HYPURA_STATUS_OK) {
        rc = report("hypura_tokenize", status);
        goto done;
    }
    tokens = malloc(n_prompt * sizeof *tokens);
    batch = malloc(n_prompt * sizeof *batch);
    logits = malloc(n_vocab * sizeof *logits);
    if (!tokens || !batch || !logits) {
        fprintf(stderr, "generate: out of memory\n");
        goto done;
    }
    status = hypura_tokenize(model, prompt, strlen(prompt), true, tokens, n_prompt, &n_prompt);
    if (status != HYPURA_STATUS_OK) {
        rc = report("hypura_tokenize", status);
        goto done;
    }

    /* The prompt, with logits after its last token only. */
    for (size_t i = 0; i < n_prompt; i++) {
        batch[i].token = tokens[i];
        batch[i].seq_id = 0;
        batch[i].logits = i + 1 == n_prompt;
    }
    size_t n_outputs = 0;
    status = hypura_decode(model, batch, n_prompt, logits, n_vocab, &n_outputs);
    if (status != HYPURA_STATUS_OK) {
        rc = report("hypura_decode", status);
        goto done;
    }

    for (int i = 0; i < max_tokens; i++) {
        int32_t token = 0;
        status = hypura_sample(model, logits, n_vocab, 0.0f, 1.0f, &token); /* greedy */
        if (status != HYPURA_STATUS_OK) {
            rc = report("hypura_sample", status);
            goto done;
        }
        if (print_token(model, token) != 0) {
            goto done;
        }
        bool eog = false;
        hypura_is_eog(model, token, &eog);
        if (eog || i + 1 == max_tokens) {
            break;
        }
        hypura_batch_token next = {.token = token, .seq_id = 0, .logits = true};
        status = hypura_decode(model, &next, 1, logits, n_vocab, &n_outputs);
        if (status != HYPURA_STATUS_OK) {
            rc = report("hypura_decode", status);
            goto done;
        }
    }
    printf("\n");

    hypura_stats stats;
    if (hypura_get_stats(model, &stats, sizeof stats) == HYPURA_STATUS_OK) {
        fprintf(stderr,
                "generate: %llu bytes resident in RAM, %llu streamed per token, %llu read, %.2f tok/s\n",
                (unsigned long long)stats.ram_resident_bytes,
                (unsigned long long)stats.nvme_streamed_bytes_per_token, (unsigned long long)stats.bytes_read,
                stats.tokens_per_second);
    }
    rc = 0;

done:
    free(tokens);
    free(batch);
    free(logits);
    hypura_model_free(model);
    return rc;
}
