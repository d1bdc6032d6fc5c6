# The two commands of the README. Both create what they need (.venv, pinned packages, UI assets, MNIST).
.PHONY: run test compat serve setup

run:    ## start a visdom server (unless one answers) and train the default VAE on MNIST, streaming to it
	scripts/run.sh $(ARGS)

test:   ## the whole test suite (installs Debian's chromium for the browser tests when it can)
	scripts/test.sh $(ARGS)

compat: ## the visdom 0.3.0 line (Python >= 3.12 users) checked here: a second venv, the visdom-facing tests
	scripts/compat_visdom03.sh $(ARGS)

serve:  ## the visdom server alone
	./run_server.sh $(ARGS)

setup:
	scripts/setup.sh
