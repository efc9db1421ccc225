# Echelon: build, run, demo and test on Debian 12.
#
#   make          build the dynamic module (build/ngx_http_echelon_module.so)
#   make run      install what is missing, build, start PostgreSQL + SMTP sink + nginx
#   make demo     walk the product guide's setup story against `make run`
#   make test     install what is missing, build, run the Test::Nginx suites
#   make test-valgrind   the same under valgrind (TEST_NGINX_USE_VALGRIND=1)
#   make check-conf      nginx -t on conf/nginx.conf.in and conf/echelon.conf
#   make bench    build, then the benchmark suite (bench/run.sh; BENCH_BIG=1
#                 adds item 4 with 10 million deliveries ahead)
#
# Settings are environment variables, also accepted on the command line
# (make run ECHELON_PORT=9090, make test TEST_FILES=t/foo.t); see README.md.

NGINX_SRC  ?= /usr/share/nginx/src
BUILD      ?= $(CURDIR)/build
MODULE      = $(BUILD)/ngx_http_echelon_module.so
NGX_BUILD   = $(BUILD)/nginx

SOURCES     = config ngx_http_echelon_module.c $(wildcard src/*.c src/*.h)

CC_OPT     ?= $(shell dpkg-buildflags --get CFLAGS) -fPIC
LD_OPT     ?= $(shell dpkg-buildflags --get LDFLAGS) -fPIC

.PHONY: all build deps deps-test run demo test test-valgrind check-conf clean \
        bench

all: build

build: $(MODULE)

$(NGX_BUILD)/objs/Makefile: config
	rm -rf $(NGX_BUILD)
	mkdir -p $(BUILD)
	cp -r $(NGINX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && bash -c '. ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$(CC_OPT)" --with-ld-opt="$(LD_OPT)" \
	        --add-dynamic-module=$(CURDIR)' > $(BUILD)/configure.log

$(MODULE): $(NGX_BUILD)/objs/Makefile $(SOURCES)
	$(MAKE) -C $(NGX_BUILD) -f objs/Makefile modules
	# a new file, not the old one rewritten: a running nginx keeps its copy
	cp $(NGX_BUILD)/objs/ngx_http_echelon_module.so $@.new
	mv -f $@.new $@

clean:
	rm -rf $(BUILD)

# The targets below install what is missing first, then build with a
# sub-make, so that the build only starts once its packages are there.
# Scripts are started with exec so that make signals them directly: SIGTERM
# to make reaches tools/run.sh and tools/test.sh, which stop their services.

ECHELON_MODULE ?= $(MODULE)
export ECHELON_MODULE

deps:
	tools/deps.sh run

deps-test:
	tools/deps.sh test

run: deps
	$(MAKE) --no-print-directory build
	exec tools/run.sh

demo:
	exec tools/demo.sh

test: deps-test
	$(MAKE) --no-print-directory build
	exec tools/test.sh

test-valgrind:
	tools/deps.sh valgrind
	$(MAKE) --no-print-directory build
	exec env TEST_NGINX_USE_VALGRIND=1 tools/test.sh

check-conf:
	tools/check-conf.sh

bench: deps
	$(MAKE) --no-print-directory build
	exec bench/run.sh
