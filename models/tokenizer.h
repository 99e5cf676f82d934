// Byte-level BPE exactly as Hugging Face `tokenizers` runs it for Qwen (tokenizer.json), the
// incremental decoder for streaming, and the ChatML chat template.
//
// Encoding: added/special tokens are matched first (longest match, in the text as given); the
// rest is NFC-normalised (utf8proc), split by the pre-tokenizer regex from tokenizer.json (run
// by PCRE2 with Unicode properties), mapped byte-to-unicode, and merged by rank.
#ifndef KEEL_MODELS_TOKENIZER_H
#define KEEL_MODELS_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tok_tokenizer; // opaque, immutable after load: safe to share between threads

// Loads DIR/tokenizer.json and DIR/tokenizer_config.json (chat template, special tokens).
// Returns 0, ERR_NOT_FOUND, ERR_FORMAT or ERR_UNSUPPORTED (err_msg() names file and problem).
int tok_load(struct tok_tokenizer **t, const char *dir);
void tok_free(struct tok_tokenizer *t); // NULL-safe

// Number of ids (base vocab + added tokens); ids are 0..tok_n_vocab-1.
int tok_n_vocab(const struct tok_tokenizer *t);
bool tok_is_special(const struct tok_tokenizer *t, int32_t id);
// Id of an added/special token by its text ("<|im_end|>"), or -1.
int32_t tok_special_id(const struct tok_tokenizer *t, const char *text);

// Encodes len bytes of text. With allow_special, added tokens in the text are matched as tokens
// (what HF does by default); without, special ones (<|im_start|>, ...) are encoded as plain text
// while non-special added tokens (<think>, ...) still match, as HF's split_special_tokens does.
// *ids is malloc'd (also for zero ids), the caller frees it. Invalid UTF-8 is ERR_INVAL.
int tok_encode(const struct tok_tokenizer *t, const char *text, size_t len, bool allow_special,
               int32_t **ids, int *n_ids);

// Decodes ids to UTF-8 (malloc'd, NUL-terminated, caller frees). skip_special drops special
// tokens. Byte sequences that are not valid UTF-8 become U+FFFD, as HF does. Unknown ids are
// ERR_RANGE.
int tok_decode(const struct tok_tokenizer *t, const int32_t *ids, int n, bool skip_special,
               char **text, size_t *len);

// Incremental decoding for streaming: push ids one at a time; each push returns the newly
// completed text (possibly empty), never a partial UTF-8 character. Concatenating every
// delta and the flush equals tok_decode of all ids.
struct tok_stream {
    const struct tok_tokenizer *t;
    bool skip_special;
    uint8_t pending[8]; // bytes of an unfinished UTF-8 character
    int n_pending;
};
void tok_stream_init(struct tok_stream *s, const struct tok_tokenizer *t, bool skip_special);
// Appends the new text to *out (malloc'd or NULL, grown with realloc; *out_len updated).
int tok_stream_push(struct tok_stream *s, int32_t id, char **out, size_t *out_len);
// Emits whatever is pending (as U+FFFD) at the end of a sequence.
int tok_stream_flush(struct tok_stream *s, char **out, size_t *out_len);

// Chat template (Qwen ChatML): renders messages as transformers' apply_chat_template renders the
// template shipped in tokenizer_config.json.
struct tok_chat_tool_call {
    const char *name;
    const char *arguments; // JSON text
};
struct tok_chat_msg {
    const char *role;      // "system", "user", "assistant", "tool"
    const char *content;   // may be NULL for an assistant message with tool calls
    const char *reasoning_content; // Qwen3 assistant thinking, or NULL
    const struct tok_chat_tool_call *tool_calls;
    int n_tool_calls;
};
// enable_thinking: -1 = the template's default, 0 = off, 1 = on (Qwen3's switch).
// tools_json: the request's "tools" array as JSON text, or NULL.
// *out is malloc'd, NUL-terminated; the caller frees it. Returns 0, ERR_INVAL (bad roles or
// order, as the template would reject) or ERR_UNSUPPORTED (the model's template is not ChatML).
int tok_chat_render(const struct tok_tokenizer *t, const struct tok_chat_msg *msgs, int n,
                    bool add_generation_prompt, int enable_thinking, const char *tools_json,
                    char **out);

// Whether the loaded template is one keel can render (checked at load; servers refuse to start
// a chat endpoint otherwise, with err_msg() from tok_load explaining).
bool tok_chat_supported(const struct tok_tokenizer *t);

#endif
