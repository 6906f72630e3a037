"""BLEU, chrF, TER (sacrebleu) and ROUGE (rouge-score), usable without torch."""
