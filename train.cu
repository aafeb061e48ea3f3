// train.cu: the one training program (placeholder until the Foundation work lands).
#include <cstdio>
int main() { printf("train: not built yet\n"); return 1; }
