#ifndef TOPNSIGMA_CNUMA_SHIM_H
#define TOPNSIGMA_CNUMA_SHIM_H
#include <numa.h>
#include <numaif.h>
#endif
