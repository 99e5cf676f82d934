// Placeholder while the renderer is written.
#include "models/tok_internal.h"
#include "common/err.h"
#include <stdio.h>
void tok__chat_detect(struct tok_tokenizer *t, const char *tmpl) {
    (void)tmpl;
    t->chat_kind = TOK__CHAT_NONE;
    snprintf(t->chat_why, sizeof(t->chat_why), "not yet");
}
bool tok_chat_supported(const struct tok_tokenizer *t) { return t->chat_kind != TOK__CHAT_NONE; }
int tok_chat_render(const struct tok_tokenizer *t, const struct tok_chat_msg *msgs, int n,
                    bool add_generation_prompt, int enable_thinking, const char *tools_json, char **out) {
    (void)t; (void)msgs; (void)n; (void)add_generation_prompt; (void)enable_thinking; (void)tools_json;
    *out = NULL;
    return err_set(ERR_UNSUPPORTED, "not yet");
}
