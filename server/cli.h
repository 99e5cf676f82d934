// The subcommands of build/keel. Each takes the arguments after its name and returns the
// process exit status (see README: 0 ok, 1 runtime failure, 2 bad usage or configuration,
// 3 not enough memory / does not fit, 4 model files missing or invalid).
#ifndef KEEL_SERVER_CLI_H
#define KEEL_SERVER_CLI_H

enum {
    SRV_EXIT_OK = 0,
    SRV_EXIT_FAILURE = 1,
    SRV_EXIT_USAGE = 2,
    SRV_EXIT_NOSPACE = 3,
    SRV_EXIT_MODEL = 4,
};

int srv_cmd_serve(int argc, char **argv);    // server/cmd_serve.c
int srv_cmd_plan(int argc, char **argv);     // server/cmd_plan.c
int srv_cmd_generate(int argc, char **argv); // server/cmd_generate.c
int srv_cmd_tokenize(int argc, char **argv); // server/cmd_tokenize.c

// Maps an ERR_* code to the exit status above.
int srv_exit_code(int err);

#endif
