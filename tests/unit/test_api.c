// Request validation of the OpenAI endpoints (server/api_request.c): every accepted form, and the
// errors with their status, message and param.
#include "common/err.h"
#include "server/api.h"
#include "tests/test.h"

#define VOCAB 1000

static int parse(enum api_kind k, const char *body, struct api_gen *g, struct api_error *e) {
    memset(e, 0, sizeof *e);
    return api_parse_gen(k, body, strlen(body), VOCAB, g, e);
}

// Parses a body that must fail with 400 and `param`, and whose message contains `words`.
static void expect_400(enum api_kind k, const char *body, const char *param, const char *words) {
    struct api_gen g;
    struct api_error e;
    int rc = parse(k, body, &g, &e);
    CHECK_MSG(rc == 400, "%s: status %d (want 400), message '%s'", body, rc, e.message);
    CHECK_MSG(strcmp(e.param, param) == 0, "%s: param '%s' (want '%s')", body, e.param, param);
    CHECK_MSG(strstr(e.message, words), "%s: message '%s' lacks '%s'", body, e.message, words);
    CHECK_STR(e.type, "invalid_request_error");
    api_gen_free(&g);
}

TEST(api_completion_prompt_forms) {
    struct api_gen g;
    struct api_error e;
    CHECK_EQ(parse(API_COMPLETION, "{\"model\": \"m\", \"prompt\": \"Hello\"}", &g, &e), 0);
    CHECK_EQ(g.n_prompts, 1);
    CHECK_STR(g.prompts[0].text, "Hello");
    CHECK_STR(g.model, "m");
    CHECK_EQ(g.sp.max_tokens, 16); // the completions default
    api_gen_free(&g);

    CHECK_EQ(parse(API_COMPLETION, "{\"prompt\": [\"a\", \"bc\"], \"n\": 3}", &g, &e), 0);
    CHECK_EQ(g.n_prompts, 2);
    CHECK_STR(g.prompts[1].text, "bc");
    CHECK_EQ(g.n, 3);
    api_gen_free(&g);

    CHECK_EQ(parse(API_COMPLETION, "{\"prompt\": [1, 2, 999]}", &g, &e), 0);
    CHECK_EQ(g.n_prompts, 1);
    CHECK_EQ(g.prompts[0].n_ids, 3);
    CHECK_EQ(g.prompts[0].ids[2], 999);
    api_gen_free(&g);

    CHECK_EQ(parse(API_COMPLETION, "{\"prompt\": [[5, 6], [7], \"x\"]}", &g, &e), 0);
    CHECK_EQ(g.n_prompts, 3);
    CHECK_EQ(g.prompts[0].n_ids, 2);
    CHECK_EQ(g.prompts[1].ids[0], 7);
    CHECK_STR(g.prompts[2].text, "x");
    api_gen_free(&g);
}

TEST(api_sampling_fields_are_read) {
    struct api_gen g;
    struct api_error e;
    const char *body = "{\"prompt\": \"x\", \"max_tokens\": 7, \"temperature\": 0, \"top_p\": 0.5,"
                       " \"top_k\": 40, \"min_p\": 0.1, \"presence_penalty\": 1.5,"
                       " \"frequency_penalty\": -1, \"repetition_penalty\": 1.2, \"seed\": 42,"
                       " \"stop\": [\"\\n\", \"END\"], \"stop_token_ids\": [3, 4], \"echo\": true,"
                       " \"logprobs\": 2, \"min_tokens\": 2, \"ignore_eos\": true,"
                       " \"skip_special_tokens\": false, \"stream\": true,"
                       " \"stream_options\": {\"include_usage\": true}, \"user\": \"u\","
                       " \"some_future_field\": {\"a\": 1}}";
    CHECK_EQ(parse(API_COMPLETION, body, &g, &e), 0);
    CHECK_EQ(g.sp.max_tokens, 7);
    CHECK_NEAR(g.sp.temperature, 0, 0);
    CHECK_NEAR(g.sp.top_p, 0.5, 1e-6);
    CHECK_EQ(g.sp.top_k, 40);
    CHECK_NEAR(g.sp.min_p, 0.1, 1e-6);
    CHECK_NEAR(g.sp.presence_penalty, 1.5, 1e-6);
    CHECK_NEAR(g.sp.frequency_penalty, -1, 1e-6);
    CHECK_NEAR(g.sp.repetition_penalty, 1.2, 1e-6);
    CHECK(g.sp.has_seed);
    CHECK_EQ(g.sp.seed, 42);
    CHECK_EQ(g.sp.n_stop, 2);
    CHECK_STR(g.sp.stop[0], "\n");
    CHECK_STR(g.sp.stop[1], "END");
    CHECK_EQ(g.sp.n_stop_token_ids, 2);
    CHECK_EQ(g.sp.stop_token_ids[1], 4);
    CHECK(g.echo);
    CHECK_EQ(g.logprobs, 2);
    CHECK_EQ(g.sp.logprobs, 2);
    CHECK_EQ(g.sp.min_tokens, 2);
    CHECK(g.sp.ignore_eos);
    CHECK(!g.sp.skip_special_tokens);
    CHECK(g.stream && g.include_usage);
    CHECK_EQ(g.n_ignored, 1);

    // A deep copy owns its own arrays.
    struct srv_sampling copy;
    CHECK_OK(api_sampling_copy(&copy, &g.sp));
    CHECK(copy.stop != g.sp.stop && copy.stop[1] != g.sp.stop[1]);
    CHECK_STR(copy.stop[1], "END");
    CHECK_EQ(copy.stop_token_ids[0], 3);
    api_sampling_free(&copy);
    api_gen_free(&g);
}

TEST(api_chat_messages_and_options) {
    struct api_gen g;
    struct api_error e;
    const char *body = "{\"model\": \"m\", \"messages\": [{\"role\": \"developer\", \"content\": \"be"
                       " brief\"}, {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\":"
                       " \"Hi \"}, {\"type\": \"text\", \"text\": \"there\"}]}, {\"role\":"
                       " \"assistant\", \"content\": null}], \"logprobs\": true, \"top_logprobs\": 3,"
                       " \"max_completion_tokens\": 9, \"max_tokens\": 100,"
                       " \"chat_template_kwargs\": {\"enable_thinking\": false}}";
    CHECK_EQ(parse(API_CHAT, body, &g, &e), 0);
    CHECK_EQ(g.n_msgs, 3);
    CHECK_STR(g.msgs[0].role, "system");
    CHECK_STR(g.msgs[1].content, "Hi there");
    CHECK(g.msgs[2].content == NULL);
    CHECK_EQ(g.logprobs, 3);
    CHECK_EQ(g.sp.max_tokens, 9);
    CHECK_EQ(g.enable_thinking, 0);
    CHECK(g.add_generation_prompt);
    api_gen_free(&g);

    // Without max_tokens a chat request may use what fits (0), unlike completions.
    CHECK_EQ(parse(API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", &g, &e), 0);
    CHECK_EQ(g.sp.max_tokens, 0);
    CHECK_EQ(g.logprobs, -1);
    api_gen_free(&g);
}

TEST(api_malformed_and_wrong_types) {
    struct api_gen g;
    struct api_error e;
    CHECK_EQ(parse(API_COMPLETION, "{\"prompt\": \"x\",", &g, &e), 400);
    CHECK_MSG(strstr(e.message, "not valid JSON"), "message: %s", e.message);
    CHECK_EQ(parse(API_COMPLETION, "[1]", &g, &e), 400);
    CHECK_MSG(strstr(e.message, "must be a JSON object"), "message: %s", e.message);
    expect_400(API_COMPLETION, "{\"prompt\": 5}", "prompt", "must be a string");
    expect_400(API_COMPLETION, "{}", "prompt", "required");
    expect_400(API_COMPLETION, "{\"prompt\": \"\"}", "prompt", "must not be empty");
    expect_400(API_COMPLETION, "{\"prompt\": []}", "prompt", "empty list");
    expect_400(API_COMPLETION, "{\"prompt\": [1, 2.5]}", "prompt", "must be an integer");
    expect_400(API_COMPLETION, "{\"prompt\": [1, 1000]}", "prompt", "outside the vocabulary");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"max_tokens\": \"5\"}", "max_tokens",
               "must be an integer, got a string");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"model\": 3}", "model", "must be a string");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"stream\": 1}", "stream", "must be a boolean");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"stop\": [\"a\", 1]}", "stop", "stop[1]");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"stop\": 3}", "stop", "string or an array");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"stream_options\": {\"include_usage\": true}}",
               "stream_options", "only allowed when 'stream' is true");
    expect_400(API_CHAT, "{\"messages\": {}}", "messages", "must be an array");
    expect_400(API_CHAT, "{\"messages\": [{\"content\": \"x\"}]}", "messages", "role");
    expect_400(API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "messages",
               "content");
    expect_400(API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}",
               "messages", "only text");
    expect_400(API_CHAT, "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}", "messages",
               "allowed: system");
    expect_400(API_CHAT, "{\"messages\": [{\"role\": \"user\"}]}", "messages", "content' is required");
    expect_400(API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": 2}",
               "logprobs", "must be a boolean");
}

TEST(api_out_of_range_values) {
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"temperature\": -0.5}", "temperature",
               "must be in [0, 100], got -0.5");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"top_p\": 0}", "top_p", "must be in");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"top_p\": 1.5}", "top_p", "got 1.5");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"max_tokens\": 0}", "max_tokens", "[1,");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"n\": 0}", "n", "must be in [1, 128]");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"logprobs\": 21}", "logprobs", "[0, 20]");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"presence_penalty\": 3}", "presence_penalty",
               "[-2, 2]");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"min_tokens\": 20, \"max_tokens\": 5}",
               "min_tokens", "must not exceed");
    expect_400(API_COMPLETION, "{\"prompt\": \"x\", \"stop_token_ids\": [5000]}", "stop_token_ids",
               "[0, 1000)");
    expect_400(API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_logprobs\": 30,"
               " \"logprobs\": true}", "top_logprobs", "[0, 20]");
    expect_400(API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_logprobs\": 2}",
               "top_logprobs", "needs 'logprobs': true");
}

TEST(api_empty_messages_and_invalid_utf8) {
    expect_400(API_CHAT, "{\"messages\": []}", "messages", "must not be empty");
    struct api_gen g;
    struct api_error e;
    const char bad[] = "{\"prompt\": \"abc\xff\xfe\"}";
    memset(&e, 0, sizeof e);
    CHECK_EQ(api_parse_gen(API_COMPLETION, bad, sizeof bad - 1, VOCAB, &g, &e), 400);
    CHECK_MSG(strstr(e.message, "UTF-8"), "message: %s", e.message);
    // A lone surrogate escape is not text either.
    CHECK_EQ(parse(API_COMPLETION, "{\"prompt\": \"\\ud800\"}", &g, &e), 400);
}

TEST(api_utf8_validator) {
    CHECK(api_utf8_valid("plain", 5));
    CHECK(api_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9)); // é € 😀
    CHECK(!api_utf8_valid("\xc3", 1));                                // cut off
    CHECK(!api_utf8_valid("\xc0\xaf", 2));                            // overlong
    CHECK(!api_utf8_valid("\xed\xa0\x80", 3));                        // surrogate
    CHECK(!api_utf8_valid("\xf4\x90\x80\x80", 4));                    // beyond U+10FFFF
    CHECK(!api_utf8_valid("\xe2\x82", 2));
    CHECK(!api_utf8_valid("a\x80", 2));
}

TEST(api_error_json_shape) {
    struct api_error e;
    api_error_set(&e, 404, "model", "The model `x` does not exist.");
    char *j = api_error_json(&e);
    CHECK_STR(j, "{\"error\":{\"message\":\"The model `x` does not exist.\",\"type\":"
                 "\"not_found_error\",\"param\":\"model\",\"code\":404}}");
    free(j);
    api_error_set(&e, 400, NULL, "bad \"quote\"");
    j = api_error_json(&e);
    CHECK_MSG(strstr(j, "\"param\":null") && strstr(j, "bad \\\"quote\\\""), "%s", j);
    free(j);
}

TEST(api_chat_tool_calls_reach_the_template) {
    struct api_gen g;
    struct api_error e;
    const char *body =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
        "\"{\\\"city\\\": \\\"Paris\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"18C\"}]}";
    CHECK_EQ(parse(API_CHAT, body, &g, &e), 0);
    CHECK_EQ(g.n_msgs, 3);
    CHECK_EQ(g.msgs[1].n_tool_calls, 1);
    CHECK_STR(g.msgs[1].tool_calls[0].name, "get_weather");
    CHECK_STR(g.msgs[1].tool_calls[0].arguments, "{\"city\": \"Paris\"}");

    struct tok_tokenizer *tok;
    if (tok_load(&tok, ".cache/qwen3-tokenizer") != 0) TEST_SKIP("no tokenizer: %s", err_msg());
    struct tok_chat_msg msgs[3];
    for (int i = 0; i < 3; i++)
        msgs[i] = (struct tok_chat_msg){g.msgs[i].role, g.msgs[i].content,
                                        g.msgs[i].reasoning_content, g.msgs[i].tool_calls,
                                        g.msgs[i].n_tool_calls};
    char *text = NULL;
    CHECK_OK(tok_chat_render(tok, msgs, 3, true, -1, NULL, &text));
    CHECK_MSG(strstr(text, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
                           "\"Paris\"}}\n</tool_call>") != NULL, "rendered:\n%s", text);
    CHECK_MSG(strstr(text, "<tool_response>\n18C\n</tool_response>") != NULL, "rendered:\n%s", text);
    free(text);
    tok_free(tok);
    api_gen_free(&g);

    const char *bad = "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":"
                      "[{\"function\":{\"name\":7}}]}]}";
    CHECK_EQ(parse(API_CHAT, bad, &g, &e), 400);
    CHECK(strstr(e.message, "tool_calls[0].function.name") != NULL);
    api_gen_free(&g);
}
