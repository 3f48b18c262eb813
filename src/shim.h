/*
 * shim — the guard that starts every worker (docs/architecture.md,
 * "Processes"): `corral-shim __shim PPID FILE ARGV0 [ARGS...]`.
 *
 * It is its own executable, linking only libc: one guard stays above each
 * worker for the worker's whole life, and the daemon's binary maps gRPC,
 * abseil, h2o, libcurl and the rest, whose relocated pages would cost every
 * guard about 2.4 MiB of private memory. `corral __shim` runs the same
 * code, for a corral binary that has no corral-shim beside it.
 */
#ifndef CORRAL_SHIM_H
#define CORRAL_SHIM_H

/* The guard's main: argv as above (argv[1] is "__shim"). Returns, or exits with, the worker's status. */
int shim_main(int argc, char **argv);

#endif
