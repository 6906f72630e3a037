"""The parts `TrainingArguments` is assembled from, one concern per module.

- `choices`: the enums and the fixed sets of accepted strings.
- `refused`: the one table of Hugging Face arguments this toolkit cannot honour, with why and what to use.
- `aliases`: deprecated names resolved into their replacements.
- `normalise`: strings, lists and JSON turned into the types the Trainer reads.
- `checks`: ranges and combinations validated at construction, and derived defaults filled in.
- `processes`: which device and process this is, and what it logs and saves.

Import `TrainingArguments` from `s2s` (or `s2s.training_args`); these modules are its internals.
"""
