# Top-level entry points for people and CI; CMake does the real build.
# `make deps && make` on a fresh Debian 12 machine gives build/nshost.

BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_TSAN ?= build-tsan
JOBS       ?= 2
CMAKE      ?= cmake
CTEST      ?= ctest
NSHOST     := $(BUILD)/nshost

.PHONY: all deps run test test-main test-asan test-tsan bench install clean

PREFIX     ?= /usr/local

all: deps $(BUILD)/CMakeCache.txt
	$(CMAKE) --build $(BUILD) -j$(JOBS)

# Configure once; `cmake --build` re-runs CMake by itself when a
# CMakeLists.txt changes.
$(BUILD)/CMakeCache.txt:
	$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

deps:
	bash tools/deps.sh

run: all
	$(NSHOST) examples/wordfreq.lua /usr/include

# Every test runs again under AddressSanitizer and UndefinedBehavior-
# Sanitizer; the C tests (label "c") also under ThreadSanitizer, as the
# Lua specs there would mostly test LuaJIT, which is not instrumented.
# --no-tests=error keeps a lost label from passing as "nothing failed".
test: test-main test-asan test-tsan

test-main: all
	$(CTEST) --test-dir $(BUILD) --output-on-failure

test-asan: deps
	$(CMAKE) -S . -B $(BUILD_ASAN) -DNSHOST_SANITIZE=address \
	  -DCMAKE_BUILD_TYPE=Debug
	$(CMAKE) --build $(BUILD_ASAN) -j$(JOBS)
	$(CTEST) --test-dir $(BUILD_ASAN) --output-on-failure -LE install \
	  --no-tests=error

test-tsan: deps
	$(CMAKE) -S . -B $(BUILD_TSAN) -DNSHOST_SANITIZE=thread \
	  -DCMAKE_BUILD_TYPE=Debug
	$(CMAKE) --build $(BUILD_TSAN) -j$(JOBS)
	$(CTEST) --test-dir $(BUILD_TSAN) --output-on-failure -L c \
	  --no-tests=error

# The luv peer needs luajit and lua-luv, which `make test` does not.
bench: all
	bash bench/deps.sh
	NSHOST=$(NSHOST) bash bench/run.sh

# The library, header, nshost.pc and CMake package, and the program.
install: all
	$(CMAKE) --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_TSAN)
