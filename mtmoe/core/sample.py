"""A deterministic banking customer-service sample: intent, slot tags, sentiment and signals.

Utterances come from templates with slot fillers, varied with openers and closers, casing, punctuation
and typos. Sentiment is labelled on about 60% of the examples and signals (multi-label) on about 70%,
so the partially-labelled path is exercised. Written as JSONL, the canonical input format.
"""
import json
import os
import random
from typing import Dict, List

SLOT_VALUES = {
    "amount": ["$50", "50 dollars", "$1,200", "three hundred dollars", "€75", "20.50", "$15.99",
               "2000 euros", "a hundred bucks", "$430"],
    "account": ["checking", "savings", "joint account", "business account", "credit card",
                "checking account", "savings account", "brokerage account"],
    "date": ["today", "tomorrow", "next friday", "on march 3rd", "last week", "yesterday",
             "on the 15th", "this morning", "end of the month", "on monday"],
    "payee": ["comcast", "verizon", "the electric company", "john smith", "my landlord", "netflix",
              "at&t", "maria garcia", "the water utility", "amazon"],
    "card": ["debit card", "credit card", "visa card", "mastercard", "amex", "card ending in 4432"],
}

TEMPLATES = {
    "check_balance": [
        ("what is my {account} balance", True), ("how much money is in my {account}", True),
        ("show me the balance of my {account}", False), ("balance for {account}", False),
        ("can you tell me how much i have in {account}", True), ("check my {account} balance", False),
    ],
    "transfer_money": [
        ("transfer {amount} from my {account} to my {account}", False),
        ("move {amount} to {account} {date}", False), ("send {amount} to {payee}", False),
        ("can i transfer {amount} to {payee} {date}", True),
        ("i want to send {payee} {amount}", False), ("wire {amount} to {payee} from {account}", False),
    ],
    "pay_bill": [
        ("pay my {payee} bill", False), ("pay {amount} to {payee} {date}", False),
        ("i need to pay {payee} {amount}", False), ("schedule a payment of {amount} to {payee} {date}", False),
        ("can you pay the {payee} bill {date}", True), ("set up autopay for {payee}", False),
    ],
    "report_lost_card": [
        ("i lost my {card}", False), ("my {card} was stolen", False), ("block my {card}", False),
        ("i can't find my {card} anywhere", False), ("how do i freeze my {card}", True),
        ("someone stole my {card} {date}", False),
    ],
    "dispute_charge": [
        ("there is a charge of {amount} from {payee} i don't recognize", False),
        ("dispute the {amount} transaction from {date}", False),
        ("i was charged {amount} twice by {payee}", False),
        ("why was i charged {amount} {date}", True), ("refund the {amount} charge from {payee}", False),
    ],
    "recent_transactions": [
        ("show my transactions from {date}", False), ("what did i spend {date}", True),
        ("list recent purchases on my {card}", False), ("show me {account} activity since {date}", False),
        ("what payments went out {date}", True),
    ],
    "open_account": [
        ("i want to open a {account}", False), ("how do i open a new {account}", True),
        ("open a {account} for me", False), ("can i get a second {account}", True),
    ],
    "update_address": [
        ("i moved and need to update my address", False), ("change my mailing address", False),
        ("how do i update my home address", True), ("update the address on my {account}", False),
    ],
}

SENTIMENT_PHRASES = {
    "negative": (["this is ridiculous,", "ugh,", "i'm really frustrated,", "terrible service,",
                  "seriously?"], ["this is unacceptable", "worst bank ever", "i'm so annoyed"]),
    "positive": (["hi!", "great app,", "love this bank,", "hello there,"],
                 ["thanks so much", "you guys are great", "much appreciated"]),
    "neutral": (["hi,", "hello,", ""], [""]),
}
URGENT = ["asap", "urgently", "right now", "immediately"]
POLITE_OPENERS = ["please", "could you please", "kindly"]


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    if rng.random() < 0.5:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + word[i + 1:]


def _amount(rng: random.Random) -> str:
    """A listed amount, or a fresh number so that amounts are learned by shape, not by heart."""
    if rng.random() < 0.5:
        return rng.choice(SLOT_VALUES["amount"])
    value = rng.choice([rng.randint(1, 99), rng.randint(100, 5000), round(rng.uniform(1, 500), 2)])
    return rng.choice(["${}", "{} dollars", "{} euros", "€{}"]).format(value)


def make_example(rng: random.Random) -> Dict:
    intent = rng.choice(sorted(TEMPLATES))
    template, is_question = rng.choice(TEMPLATES[intent])
    sentiment = rng.choices(["neutral", "negative", "positive"], weights=[5, 3, 2])[0]
    urgent = rng.random() < 0.25
    polite = rng.random() < 0.3

    tokens: List[str] = []
    tags: List[str] = []

    def add(words: str, tag: str = "O") -> None:
        for j, word in enumerate(words.split()):
            tokens.append(word)
            tags.append(tag if tag == "O" else ("B-" if j == 0 else "I-") + tag)

    openers, closers = SENTIMENT_PHRASES[sentiment]
    add(rng.choice(openers))
    polite_at_start = polite and rng.random() < 0.6
    if polite_at_start:
        add(rng.choice(POLITE_OPENERS))
    for word in template.split():
        if word.startswith("{"):
            slot = word.strip("{}")
            add(_amount(rng) if slot == "amount" else rng.choice(SLOT_VALUES[slot]), slot)
        else:
            add(_typo(word, rng) if rng.random() < 0.04 else word)
    if urgent:
        add(rng.choice(URGENT))
    if rng.random() < 0.5:
        add(rng.choice(closers))
    if polite and not polite_at_start:
        add(rng.choice(["please", "thank you", "thanks"]))
    end = "?" if is_question else rng.choice([".", "", "!" if sentiment != "neutral" else ""])
    if end:
        tokens[-1] += end

    style = rng.random()
    if style < 0.15:
        tokens[0] = tokens[0][:1].upper() + tokens[0][1:]
    elif style < 0.2:
        tokens = [t.upper() for t in tokens]

    example = {"text": " ".join(tokens), "tokens": tokens, "intent": intent, "slots": tags}
    if rng.random() < 0.6:
        example["sentiment"] = sentiment
    if rng.random() < 0.7:
        signals = ["question" if is_question else "statement"]
        signals += ["urgent"] * urgent + ["polite"] * polite
        example["signals"] = signals
    return example


def write_sample(out_dir: str, num_examples: int = 3000, seed: int = 13) -> Dict[str, int]:
    """Writes train/eval/test JSONL (80/10/10) into `out_dir`; returns the count per split."""
    rng = random.Random(seed)
    examples = [make_example(rng) for _ in range(num_examples)]
    n_eval = n_test = max(1, num_examples // 10)
    splits = {"train": examples[n_eval + n_test:], "eval": examples[:n_eval],
              "test": examples[n_eval:n_eval + n_test]}
    os.makedirs(out_dir, exist_ok=True)
    for split, rows in splits.items():
        with open(os.path.join(out_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {split: len(rows) for split, rows in splits.items()}
