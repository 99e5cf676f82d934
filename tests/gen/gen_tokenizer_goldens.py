#!/usr/bin/env python3
"""Writes the tokenizer goldens under tests/data/tokenizer/ from the reference implementations.

  ids.jsonl     Hugging Face `tokenizers` (Tokenizer.from_file): the ids of every corpus line, with
                added tokens matched (the default) and, where it differs, with special tokens
                encoded as plain text (encode_special_tokens=True, keel's allow_special=false).
  decode.jsonl  transformers (AutoTokenizer): ids -> text with and without special tokens, for
                every corpus line and for random / byte-level id sequences (invalid UTF-8 included).
  chat.jsonl    transformers apply_chat_template on the Qwen3 template of tokenizer_config.json and
                on the classic Qwen2.5 and Qwen2 ChatML templates (tests/data/tokenizer/*.jinja).
  flags.jsonl   `tokenizers` on a copy of tokenizer.json whose added tokens are changed and extended
                by flags_tokens.json (lstrip, rstrip, single_word, normalized, new tokens): ids with
                and without special tokens and the decode of those ids, for flags_corpus.jsonl.

Usage: gen_tokenizer_goldens.py TOKENIZER_DIR DATA_DIR OUT_DIR
  TOKENIZER_DIR holds tokenizer.json + tokenizer_config.json (the real Qwen3 tokenizer);
  DATA_DIR holds corpus.jsonl and the two .jinja templates. The first line of every output file is
  {"meta": {...}} with the library versions. Runs where `tokenizers` and `transformers` exist (the
  GPU machine); no GPU is used.
"""
import json
import os
import random
import sys

# ---- chat conversations (shared by every template) --------------------------------------------
# Tool-call arguments are JSON text, as in the OpenAI API and keel's tok_chat_tool_call. The Qwen3
# template prints a string argument verbatim; the Qwen2.5 template applies tojson, so for it the
# text is parsed to a dict first (what callers of transformers pass, and what keel renders).
WEATHER_TOOL = ('{"type": "function", "function": {"name": "get_weather", "description": "Get the '
                'weather in a city.", "parameters": {"type": "object", "properties": {"city": '
                '{"type": "string", "description": "City name, e.g. \\"Paris\\""}, "unit": {"type": '
                '"string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}')
ODD_TOOL = ('{"type":"function","function":{"name":"calc","description":"Zahlen \\u00fcberpr\\u00fcfen '
            '\\u2014 \\u4e2d\\u6587 \\ud83d\\ude00\\ttab\\nnewline \\\\ back","parameters":{"type":"object",'
            '"properties":{"x":{"type":"number","default":1.0,"minimum":-0.5,"maximum":1e5,"eps":1e-07,'
            '"big":12345678901234567890,"neg":-3},"flag":{"type":"boolean","default":false},"none":'
            '{"default":null},"list":{"type":"array","items":[1,2.5,"s",[],{}]},"e":{"v":1.5E+300}}}}}')
SEARCH_TOOL = '{"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}'

def U(c): return {"role": "user", "content": c}
def S(c): return {"role": "system", "content": c}
def A(c, **kw):
    m = {"role": "assistant", "content": c}
    m.update(kw)
    return m
def T(c): return {"role": "tool", "content": c}
def TC(name, args): return {"type": "function", "function": {"name": name, "arguments": args}}

CONVERSATIONS = [
    ("single_user", [U("Hello!")], None),
    ("system_user", [S("You are a terse assistant."), U("What is 2+2?")], None),
    ("multi_turn", [S("Be nice."), U("Hi"), A("Hello! How can I help?"), U("Tell me a joke.")], None),
    ("think_in_history", [U("What is 1+1?"), A("<think>\nEasy: add them.\n</think>\n\n2"), U("And 2+2?")], None),
    ("reasoning_field_history", [U("Q1"), A("A1", reasoning_content="thinking about Q1"), U("Q2")], None),
    ("reasoning_last", [U("Q1"), A("The answer.", reasoning_content="\nlet me think\n")], None),
    ("think_last_no_field", [U("Q"), A("\n<think>\n\nI pondered.\n\n</think>\n\n\nFinal answer")], None),
    ("assistant_last_plain", [U("Say hi"), A("hi")], None),
    ("empty_reasoning_field", [U("Q"), A("ans", reasoning_content="")], None),
    ("reasoning_and_think_text", [U("Q"), A("pre</think>post", reasoning_content="R")], None),
    ("tools_with_system", [S("You can call tools."), U("Weather in Paris?"),
                           A("", tool_calls=[TC("get_weather", '{"city": "Paris"}')]),
                           T('{"temp": 21, "unit": "celsius"}'), A("It is 21 °C in Paris.")],
     "[" + WEATHER_TOOL + "]"),
    ("tools_no_system_multi_call", [U("Weather in Paris and Tokyo?"),
                                    A("", tool_calls=[TC("get_weather", '{"city": "Paris"}'),
                                                      TC("get_weather", '{"city": "Tokyo", "unit": "celsius"}')]),
                                    T("sunny"), T("rainy")],
     "[" + WEATHER_TOOL + ", " + SEARCH_TOOL + "]"),
    ("tool_call_with_content", [U("Find cats"),
                                A("Let me search.", reasoning_content="use the search tool",
                                  tool_calls=[TC("search", '{"q": "cats"}')]),
                                T("cats are mammals"), A("Cats are mammals.", reasoning_content="done")],
     "[" + SEARCH_TOOL + "]"),
    ("tool_loop_reasoning", [U("Compute"),
                             A("", reasoning_content="step 1", tool_calls=[TC("calc", '{"x": 1}')]),
                             T("1"),
                             A("", tool_calls=[TC("calc", '{"x": 2}')]),
                             T("2"),
                             A("Done: 3", reasoning_content="sum")],
     "[" + ODD_TOOL + "]"),
    ("odd_tool_json", [S("sys"), U("use calc")], "[" + ODD_TOOL + "]"),
    ("empty_tools_list", [U("no tools here")], "[]"),
    ("system_in_middle", [U("first"), A("ok"), S("new instructions"), U("second")], None),
    ("user_tool_response_text", [U("real question"), A("<think>t1</think>a1"),
                                 U("<tool_response>\nresult\n</tool_response>"), A("<think>t2</think>a2")], None),
    ("unicode_content", [S("Réponds en français 🇫🇷"), U("你好！こんにちは 안녕 مرحبا\n\ttab"), A("Bonjour 😀"), U("Merci")], None),
    ("empty_contents", [S(""), U(""), A(""), U("")], None),
    ("special_tokens_in_content", [U("<|im_start|>user\nfake<|im_end|>"), A("<think></think>x"), U("</think>")], None),
    ("tool_first_message", [T("orphan result"), U("what now?")], None),
    ("many_turns", [U("u1"), A("<think>r1</think>a1"), U("u2"), A("a2", reasoning_content="r2"), U("u3"),
                    A("\n\na3 with leading newlines"), U("u4")], None),
    ("args_unicode", [U("Tokyo weather"), A("", tool_calls=[TC("get_weather", '{"city": "東京", "note": "a\\nb"}')]),
                      T("晴れ")], "[" + WEATHER_TOOL + "]"),
    ("trailing_tool", [U("x"), A("", tool_calls=[TC("search", '{"q": "x"}')]), T("r1")], "[" + SEARCH_TOOL + "]"),
]

# Conversations that the classic templates cannot render (they need `content` on every message
# or reasoning fields) are still fine: those templates ignore unknown keys.

def to_hf_messages(msgs, parse_args):
    out = []
    for m in msgs:
        m = json.loads(json.dumps(m))
        for tc in m.get("tool_calls", []) or []:
            if parse_args:
                tc["function"]["arguments"] = json.loads(tc["function"]["arguments"])
        out.append(m)
    return out


def main():
    import traceback
    import tokenizers
    import transformers
    tok_dir, data_dir, out_dir = sys.argv[1:4]
    meta = {"meta": {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
                     "python": sys.version.split()[0], "generator": "tests/gen/gen_tokenizer_goldens.py"}}
    print(meta)
    os.makedirs(out_dir, exist_ok=True)
    all_ids = []
    rc = 0
    for step in ("ids", "decode", "chat", "flags"):
        try:
            if step == "ids":
                all_ids = gen_ids(tok_dir, data_dir, out_dir, meta)
            elif step == "decode":
                gen_decode(tok_dir, out_dir, meta, all_ids)
            elif step == "flags":
                gen_flags(tok_dir, data_dir, out_dir, meta)
            else:
                gen_chat(tok_dir, data_dir, out_dir, meta)
        except Exception:
            traceback.print_exc()
            rc = 1
    sys.exit(rc)


def gen_ids(tok_dir, data_dir, out_dir, meta):
    from tokenizers import Tokenizer
    corpus = [json.loads(l)["text"] for l in open(os.path.join(data_dir, "corpus.jsonl"), encoding="utf-8")]
    tk = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    tk_plain = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    tk_plain.encode_special_tokens = True
    all_ids = []
    with open(os.path.join(out_dir, "ids.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps(meta) + "\n")
        for i, s in enumerate(corpus):
            ids = tk.encode(s, add_special_tokens=False).ids
            rec = {"i": i, "ids": ids}
            plain = tk_plain.encode(s, add_special_tokens=False).ids
            if plain != ids:
                rec["ids_plain"] = plain
            all_ids.append(ids)
            f.write(json.dumps(rec) + "\n")

    return all_ids


def gen_decode(tok_dir, out_dir, meta, all_ids):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    tk = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(tok_dir)
    n_vocab = len(hf)
    rng = random.Random(1234)
    byte_ids = [tk.token_to_id(c) for c in bytes_to_unicode_chars()]
    special = [hf.convert_tokens_to_ids(t) for t in ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>"]]
    seqs = [ids for ids in all_ids]
    for _ in range(40):
        seqs.append([rng.randrange(n_vocab) for _ in range(rng.randint(1, 24))])
    for _ in range(40):  # raw bytes: partial and invalid UTF-8, with specials in between
        seq = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            seq.append(rng.choice(special) if r < 0.15 else byte_ids[rng.choice(range(0x80, 0x100)) if r < 0.8 else rng.randrange(256)])
        seqs.append(seq)
    seqs.append([byte_ids[0xE4], byte_ids[0xB8], special[0], byte_ids[0xAD]])
    seqs.append([byte_ids[0xF0], byte_ids[0x9F], byte_ids[0x98]])
    seqs.append([byte_ids[0xE0], byte_ids[0x80], byte_ids[0x41]])
    seqs.append([byte_ids[0xED], byte_ids[0xA0], byte_ids[0x80]])
    seqs.append([byte_ids[0xC0], byte_ids[0xAF], byte_ids[0xF5], byte_ids[0xFF]])
    with open(os.path.join(out_dir, "decode.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps(meta) + "\n")
        for ids in seqs:
            rec = {"ids": ids, "text": hf.decode(ids, skip_special_tokens=False),
                   "text_skip": hf.decode(ids, skip_special_tokens=True)}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"decode {len(seqs)} sequences")


def gen_chat(tok_dir, data_dir, out_dir, meta):
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(tok_dir)
    templates = [("qwen3", None),
                 ("qwen2.5", open(os.path.join(data_dir, "qwen25_template.jinja"), encoding="utf-8").read()),
                 ("qwen2", open(os.path.join(data_dir, "qwen2_template.jinja"), encoding="utf-8").read())]
    n = 0
    with open(os.path.join(out_dir, "chat.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps(meta) + "\n")
        for tname, tmpl in templates:
            for name, msgs, tools_json in CONVERSATIONS:
                if tname == "qwen2" and tools_json is not None:
                    continue
                flag_sets = [(agp, th) for agp in (True, False) for th in (None, True, False)]
                if tname != "qwen3":
                    flag_sets = [(True, None), (False, None)]
                for agp, th in flag_sets:
                    kw = {}
                    if th is not None:
                        kw["enable_thinking"] = th
                    tools = json.loads(tools_json) if tools_json is not None else None
                    try:
                        text = hf.apply_chat_template(to_hf_messages(msgs, tname != "qwen3"), tools=tools,
                                                      chat_template=tmpl, tokenize=False,
                                                      add_generation_prompt=agp, **kw)
                    except Exception as e:  # recorded so the C side can expect a refusal
                        print(f"chat {tname}/{name}: {type(e).__name__}: {e}", file=sys.stderr)
                        continue
                    rec = {"template": tname, "name": name, "messages": msgs, "tools_json": tools_json,
                           "add_generation_prompt": agp, "enable_thinking": th, "text": text}
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    n += 1
    print(f"chat {n} renders")


def apply_flags(tokenizer_json, flags):
    """The added tokens of tokenizer.json changed and extended as flags_tokens.json says (the C
    test applies the same file the same way)."""
    added = tokenizer_json["added_tokens"]
    for f in flags:
        old = [a for a in added if a["content"] == f["content"]]
        if old:
            old[0].update({k: v for k, v in f.items() if k != "content"})
        else:
            tok = {"id": f["id"], "content": f["content"], "single_word": False, "lstrip": False,
                   "rstrip": False, "normalized": False, "special": False}
            tok.update(f)
            added.append(tok)
    return tokenizer_json


def gen_flags(tok_dir, data_dir, out_dir, meta):
    import tempfile
    from tokenizers import Tokenizer
    tj = json.load(open(os.path.join(tok_dir, "tokenizer.json"), encoding="utf-8"))
    flags = json.load(open(os.path.join(data_dir, "flags_tokens.json"), encoding="utf-8"))
    tj = apply_flags(tj, flags)
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "tokenizer.json")
    json.dump(tj, open(path, "w", encoding="utf-8"), ensure_ascii=False)
    tk = Tokenizer.from_file(path)
    tk_plain = Tokenizer.from_file(path)
    tk_plain.encode_special_tokens = True
    corpus = [json.loads(l)["text"] for l in open(os.path.join(data_dir, "flags_corpus.jsonl"), encoding="utf-8")]
    with open(os.path.join(out_dir, "flags.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps(meta) + "\n")
        for i, s in enumerate(corpus):
            ids = tk.encode(s, add_special_tokens=False).ids
            plain = tk_plain.encode(s, add_special_tokens=False).ids
            rec = {"i": i, "ids": ids, "ids_plain": plain,
                   "text": tk.decode(ids, skip_special_tokens=False),
                   "text_skip": tk.decode(ids, skip_special_tokens=True)}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        for ids in ([151669], [151671], [151672], [151669, 9707, 151670, 151671]):
            rec = {"i": -1, "ids": ids, "text": tk.decode(ids, skip_special_tokens=False),
                   "text_skip": tk.decode(ids, skip_special_tokens=True)}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"flags {len(corpus)} lines")


def bytes_to_unicode_chars():
    # GPT-2's byte-to-unicode table, indexed by byte value.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


if __name__ == "__main__":
    main()
