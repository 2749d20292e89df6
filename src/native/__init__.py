"""The optional compiled (mypyc) build of the analysis core: ``build`` makes it, ``loader`` chooses it."""
