"""One module per generator; each registers itself with `gan.models.register` when imported.

`gan.models` imports every module here at start-up, so a new generator is a new file (the README's
"Extending" section). Modules import Keras inside `build` only: the registry must load without it.
"""
