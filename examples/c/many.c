/* Several continuations of one prompt, generated together on libhypura's engine (the one
 * `hypura serve` runs): request i samples with seed SEED + i. Prints "[i] text" per request
 * (newlines written as \n), as `hypura run -P N` does.
 *
 *   cc -Wall -Wextra examples/c/many.c $(pkg-config --cflags --libs hypura) -o many
 *   ./many models/SmolLM2-135M-Instruct.Q4_1.gguf 50 "Once upon a time" 16 3 42 0.9 [threads]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypura.h"

#define MAX_REQUESTS 16

struct texts {
    uint64_t ids[MAX_REQUESTS];
    char *text[MAX_REQUESTS];
    size_t len[MAX_REQUESTS];
    size_t n;
    int out_of_memory;
};

static int report(const char *what, hypura_status status) {
    char message[1024];
    size_t len = 0;
    if (hypura_last_error(message, sizeof message, &len) != HYPURA_STATUS_OK) {
        snprintf(message, sizeof message, "(a %zu-byte message)", len);
    }
    fprintf(stderr, "many: %s failed (status %u): %s\n", what, (unsigned)status, message);
    return 1;
}

/* The engine's callback: appends each request's new text to its buffer. */
static void on_event(void *user, const hypura_event *event) {
    struct texts *t = user;
    if (event->kind != HYPURA_EVENT_TEXT) {
        return;
    }
    for (size_t i = 0; i < t->n; i++) {
        if (t->ids[i] != event->request_id) {
            continue;
        }
        char *grown = realloc(t->text[i], t->len[i] + event->text_len + 1);
        if (!grown) {
            t->out_of_memory = 1;
            return;
        }
        memcpy(grown + t->len[i], event->text, event->text_len);
        t->len[i] += event->text_len;
        grown[t->len[i]] = '\0';
        t->text[i] = grown;
    }
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: %s MODEL.gguf WEIGHTS_PERCENT PROMPT MAX_TOKENS N SEED TEMPERATURE [THREADS]\n", argv[0]);
        return 2;
    }
    const char *prompt = argv[3];
    unsigned max_tokens = (unsigned)atoi(argv[4]);
    size_t n = (size_t)atoi(argv[5]);
    uint64_t seed = strtoull(argv[6], NULL, 10);
    float temperature = (float)atof(argv[7]);
    if (n < 1 || n > MAX_REQUESTS) {
        fprintf(stderr, "many: N must be 1 to %d\n", MAX_REQUESTS);
        return 2;
    }
    int rc = 1;
    struct texts texts = {0};
    hypura_model *model = NULL;

    /* One sequence per request, each with a 256-token context (`hypura run -c 256 -P N`). */
    hypura_params *params = NULL;
    hypura_status status = hypura_params_new(&params);
    if (status == HYPURA_STATUS_OK) status = hypura_params_set_model_path(params, argv[1]);
    if (status == HYPURA_STATUS_OK) status = hypura_params_set_weights_budget_percent(params, (float)atof(argv[2]));
    if (status == HYPURA_STATUS_OK) status = hypura_params_set_sequences(params, (uint32_t)n);
    if (status == HYPURA_STATUS_OK) status = hypura_params_set_context_length(params, (uint32_t)(256 * n));
    if (status == HYPURA_STATUS_OK && argc > 8) status = hypura_params_set_threads(params, (uint32_t)atoi(argv[8]));
    if (status != HYPURA_STATUS_OK) {
        hypura_params_free(params);
        return report("hypura_params", status);
    }
    status = hypura_load(params, &model);
    hypura_params_free(params);
    if (status != HYPURA_STATUS_OK) {
        return report("hypura_load", status);
    }

    for (size_t i = 0; i < n; i++) {
        hypura_request_params *request = NULL;
        status = hypura_request_params_new(&request);
        if (status == HYPURA_STATUS_OK) status = hypura_request_params_set_max_tokens(request, max_tokens);
        if (status == HYPURA_STATUS_OK) status = hypura_request_params_set_temperature(request, temperature);
        if (status == HYPURA_STATUS_OK) status = hypura_request_params_set_seed(request, seed + i);
        if (status == HYPURA_STATUS_OK) status = hypura_submit(model, prompt, strlen(prompt), request, &texts.ids[i]);
        hypura_request_params_free(request);
        if (status != HYPURA_STATUS_OK) {
            rc = report("hypura_submit", status);
            goto done;
        }
        texts.n++;
    }
    /* Each step decodes one batch for every running request. */
    size_t running = n, waiting = 0;
    while (running + waiting > 0) {
        status = hypura_step(model, on_event, &texts, &running, &waiting);
        if (status != HYPURA_STATUS_OK) {
            rc = report("hypura_step", status);
            goto done;
        }
        if (texts.out_of_memory) {
            fprintf(stderr, "many: out of memory\n");
            goto done;
        }
    }
    for (size_t i = 0; i < n; i++) {
        printf("[%zu] ", i);
        for (size_t k = 0; k < texts.len[i]; k++) {
            if (texts.text[i][k] == '\n') {
                fputs("\\n", stdout);
            } else {
                putchar(texts.text[i][k]);
            }
        }
        putchar('\n');
    }
    rc = 0;

done:
    for (size_t i = 0; i < texts.n; i++) {
        free(texts.text[i]);
    }
    hypura_model_free(model);
    return rc;
}
