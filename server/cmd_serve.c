// Placeholder until the serve command lands; replaced by its owner.
#include "server/cli.h"

#include <stdio.h>

int srv_cmd_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "keel serve: not built yet\n");
    return SRV_EXIT_FAILURE;
}
