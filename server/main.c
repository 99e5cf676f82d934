// build/keel: dispatches to the subcommands (server/cli.h).
#include "common/err.h"
#include "server/cli.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: keel <command> [options]\n"
               "\n"
               "commands:\n"
               "  serve      run the OpenAI-compatible HTTP server (default command)\n"
               "  plan       print the memory plan for a model without touching a GPU\n"
               "  generate   run one prompt and print the completion\n"
               "  tokenize   JSON lines {\"text\": ...} on stdin -> {\"ids\": [...]} on stdout\n"
               "\n"
               "`keel <command> --help` lists each command's options.\n");
}

int srv_exit_code(int err) {
    switch (err) {
    case 0: return SRV_EXIT_OK;
    case ERR_INVAL:
    case ERR_RANGE: return SRV_EXIT_USAGE;
    case ERR_NOSPACE:
    case ERR_CUDA_ALLOC: return SRV_EXIT_NOSPACE;
    case ERR_NOT_FOUND:
    case ERR_FORMAT:
    case ERR_UNSUPPORTED: return SRV_EXIT_MODEL;
    default: return SRV_EXIT_FAILURE;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return srv_cmd_serve(0, argv + 1);
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0) return srv_cmd_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "plan") == 0) return srv_cmd_plan(argc - 2, argv + 2);
    if (strcmp(cmd, "generate") == 0) return srv_cmd_generate(argc - 2, argv + 2);
    if (strcmp(cmd, "tokenize") == 0) return srv_cmd_tokenize(argc - 2, argv + 2);
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (cmd[0] == '-') return srv_cmd_serve(argc - 1, argv + 1); // `keel --model X` = serve
    fprintf(stderr, "keel: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return SRV_EXIT_USAGE;
}
