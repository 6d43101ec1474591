#ifndef CTESTSUPPORT_H
#define CTESTSUPPORT_H
#include <stddef.h>
/// Bytes of heap in use now (mallinfo2's uordblks), for tests that check for leaks.
size_t test_heap_in_use(void);
#endif
