#ifndef TOPNSIGMA_COPENBLAS_SHIM_H
#define TOPNSIGMA_COPENBLAS_SHIM_H
#include <cblas.h>
#endif
