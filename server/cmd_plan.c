// Placeholder until the plan command lands; replaced by its owner.
#include "server/cli.h"

#include <stdio.h>

int srv_cmd_plan(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "keel plan: not built yet\n");
    return SRV_EXIT_FAILURE;
}
