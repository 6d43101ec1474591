#include "CTestSupport.h"
#include <malloc.h>
size_t test_heap_in_use(void) { return mallinfo2().uordblks; }
