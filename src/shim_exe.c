/*
 * corral-shim — the guard executable (shim.h): libc and shim.c only.
 */
#include "shim.h"

int main(int argc, char **argv)
{
    return shim_main(argc, argv);
}
