"""One module per generator; each declares a `Generator` (gan/models/registry.py) as a module value.

`gan.models` collects every module here the first time the registry is asked, so a new generator is a
new file (the README's "Extending" section). Modules import Keras inside `build` only: the registry
must load without it.
"""
