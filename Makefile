# llmq: build, test and run.
#   make            build every program (./train, ./tokenizer), the test binary and dev/ benchmarks
#   make test       build and run the GoogleTest suite (GPU tests skip with a message without a GPU)
#   make run        tokenize the bundled corpus if needed and train the default model on it
#   make gpucheck   on a GPU machine: GPU tests, compute-sanitizer, benchmarks, one summary table
#
# Layout of the build: every .cpp/.cu under kernels/ layers/ quant/ adapters/ tools/ (except the
# programs' *_main.cpp) goes into build/libllmq.a; each program links it.

CXX      ?= g++
NVCC     ?= nvcc
BUILD    := build

# GPU architecture: the detected GPU's, else sm_80 and sm_90 (A100, H100) so a GPU-less build still
# compiles every kernel for real targets.
GPU_CC   := $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
ifeq ($(GPU_CC),)
  NVCC_ARCH := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
else
  NVCC_ARCH := -gencode arch=compute_$(GPU_CC),code=sm_$(GPU_CC)
endif

WARN      := -Wall -Wextra -Wno-unused-parameter
CXXFLAGS  ?= -O3 -march=native -g
CXXFLAGS  += -std=c++17 -fopenmp $(WARN) -MMD -MP
NVCCFLAGS ?= -O3 -lineinfo
NVCCFLAGS += -std=c++17 $(NVCC_ARCH) -Xcompiler "-fopenmp -march=native $(WARN)" -MMD -MP
# GoogleTest: the system's (Debian libgtest-dev) unless dev/gpucheck.sh points these at a source build
GTEST_CFLAGS ?=
GTEST_LIBS   ?= -lgtest -lgtest_main
CXXFLAGS  += $(GTEST_CFLAGS)
NVCCFLAGS += $(GTEST_CFLAGS)
CUDA_LIBS := -lcublasLt -lcublas -Xlinker -rpath=$(dir $(shell which $(NVCC)))../lib64
# LAPACK/BLAS (the CPU SVD): the system's, unless dev/gpucheck.sh points this at the copies in build/deps
LAPACK_LIBS ?= -llapack -lblas
LDLIBS    := -Xcompiler -fopenmp $(LAPACK_LIBS) -lpthread

PROGRAM_MAINS := $(wildcard tools/*_main.cpp)
LIB_SRC := $(filter-out $(PROGRAM_MAINS), $(wildcard kernels/*.cpp layers/*.cpp quant/*.cpp adapters/*.cpp tools/*.cpp)) \
           $(wildcard kernels/*.cu layers/*.cu quant/*.cu adapters/*.cu)
LIB_OBJ := $(patsubst %,$(BUILD)/%.o,$(LIB_SRC))
TEST_SRC := $(wildcard test/*.cpp test/*.cu)
TEST_OBJ := $(patsubst %,$(BUILD)/%.o,$(TEST_SRC))
# The GPU tests (test/*_cuda.cu) are in build/tests with the rest (skipping without a GPU) and alone in
# build/gpu_tests, for `make gpucheck` and compute-sanitizer.
GPU_TEST_OBJ := $(patsubst %,$(BUILD)/%.o,$(wildcard test/*_cuda.cu))
DEV_SRC := $(wildcard dev/*.cu dev/*.cpp)
DEV_BIN := $(patsubst dev/%,$(BUILD)/dev/%,$(basename $(DEV_SRC)))
DEV_CUDA_BIN := $(patsubst dev/%.cu,$(BUILD)/dev/%,$(wildcard dev/*.cu))
PROGRAMS := train $(patsubst tools/%_main.cpp,%,$(PROGRAM_MAINS))

.PHONY: all test run gpucheck gpudeps cuda-benchmarks print-cuda-benchmarks clean
# keep objects that pattern chains would treat as intermediate (and delete after linking)
.SECONDARY:
all: $(PROGRAMS) $(BUILD)/tests $(DEV_BIN)

$(BUILD)/%.cpp.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@
$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libllmq.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

train: $(BUILD)/train.cu.o $(BUILD)/libllmq.a
	$(NVCC) $(NVCCFLAGS) $^ -o $@ $(CUDA_LIBS) $(LDLIBS)
%: $(BUILD)/tools/%_main.cpp.o $(BUILD)/libllmq.a
	$(NVCC) $(NVCCFLAGS) $^ -o $@ $(CUDA_LIBS) $(LDLIBS)

$(BUILD)/tests: $(TEST_OBJ) $(BUILD)/libllmq.a
	$(NVCC) $(NVCCFLAGS) $^ -o $@ $(GTEST_LIBS) $(CUDA_LIBS) $(LDLIBS)
$(BUILD)/gpu_tests: $(GPU_TEST_OBJ) $(BUILD)/libllmq.a
	$(NVCC) $(NVCCFLAGS) $^ -o $@ $(GTEST_LIBS) $(CUDA_LIBS) $(LDLIBS)

$(BUILD)/dev/%: dev/%.cu $(BUILD)/libllmq.a
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $^ -o $@ $(CUDA_LIBS) -Xcompiler -fopenmp -lpthread
cuda-benchmarks: $(DEV_CUDA_BIN)
print-cuda-benchmarks:
	@echo $(DEV_CUDA_BIN)
$(BUILD)/dev/%: dev/%.cpp $(BUILD)/libllmq.a
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $^ -o $@ -fopenmp $(LAPACK_LIBS) -lpthread

# The demo: a 4096-token BPE vocabulary trained on the bundled corpus (the tiny model's LM head with
# gpt2's 50257 tokens is too slow to learn much in a few CPU minutes), the corpus sharded with it (one
# document per line), then the default run of ./train (tiny model, 500 steps).
RUN_DIR := data/shards
run: train tokenizer
	@mkdir -p $(RUN_DIR)
	@[ -f $(RUN_DIR)/vocab4096.json ] || ./tokenizer train-vocab --size 4096 --out $(RUN_DIR)/vocab4096.json --quiet data/text/*.txt
	@ls $(RUN_DIR)/text_train_*.bin >/dev/null 2>&1 || ./tokenizer shard --vocab $(RUN_DIR)/vocab4096.json --docs line --prefix text --out $(RUN_DIR) --quiet data/text
	./train --data $(RUN_DIR) --vocab $(RUN_DIR)/vocab4096.json --out out

# The whole suite. GTEST_BRIEF keeps the log to failures and the summary.
test: $(BUILD)/tests $(PROGRAMS)
	$(BUILD)/tests --gtest_brief=1

# On a GPU machine: build, every GPU test, compute-sanitizer, every benchmark, one summary table.
gpucheck:
	bash dev/gpucheck.sh
# Copies GoogleTest's sources (Debian's libgtest-dev ships them) and the LAPACK/BLAS shared libraries into
# build/deps, for GPU machines whose image has neither: carry build/deps there; dev/gpucheck.sh uses them.
GPUDEPS_LIBS := liblapack.so.3 libblas.so.3 libgfortran.so.5 libquadmath.so.0
gpudeps:
	@mkdir -p $(BUILD)/deps/lib
	rm -rf $(BUILD)/deps/googletest && cp -r /usr/src/googletest/googletest $(BUILD)/deps/googletest
	for lib in $(GPUDEPS_LIBS); do cp -L /usr/lib/x86_64-linux-gnu/$$lib $(BUILD)/deps/lib/; done

clean:
	rm -rf $(BUILD) $(PROGRAMS)

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/train.cu.d $(patsubst %,$(BUILD)/%.d,$(PROGRAM_MAINS))
