// Placeholder until the tokenize command lands; replaced by its owner.
#include "server/cli.h"

#include <stdio.h>

int srv_cmd_tokenize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "keel tokenize: not built yet\n");
    return SRV_EXIT_FAILURE;
}
