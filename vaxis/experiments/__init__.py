"""One module per notebook: the experiment logic that the numbered notebooks call.

* :mod:`.extraction`: notebook 02 (games -> span items -> fit and evaluation passes).
* :mod:`.axis`: notebook 03 (held-out evaluation of the axis with its controls).

Shared mechanisms (models, hooks, extract, chat, cache, evaluate) stay in the core package.
"""
