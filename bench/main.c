// Placeholder for keel-bench until the load generator lands.
#include <stdio.h>

int main(void) {
    fprintf(stderr, "keel-bench: not built yet\n");
    return 1;
}
