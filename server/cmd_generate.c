// Placeholder until the generate command lands; replaced by its owner.
#include "server/cli.h"

#include <stdio.h>

int srv_cmd_generate(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "keel generate: not built yet\n");
    return SRV_EXIT_FAILURE;
}
