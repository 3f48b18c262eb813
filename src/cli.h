/*
 * cli — the client verbs of the corral binary (ls, ps, load, unload, scale,
 * infer, generate, logs, events, top), talking HTTP to the daemon at CORRAL_URL.
 */
#ifndef CORRAL_CLI_H
#define CORRAL_CLI_H

/* Runs verb argv[0] with its arguments; returns the exit status. */
int cli_main(int argc, char **argv);

#endif
