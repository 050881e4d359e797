"""Names of the features that pass between stages (raw examples, Transform outputs, serving outputs)."""

TEXT = "text"            # raw input: the utterance
TOKENS = "tokens"        # Transform output and serving output: raw whitespace tokens, '' padded
TOKEN_IDS = "token_ids"  # Transform output and model input: vocabulary ids, PAD_ID padded
CHAR_IDS = "char_ids"    # Transform output and model input: [tokens, chars] character ids, PAD_ID padded
LENGTH_BUCKET = "length_bucket"  # evaluation slice: tokens per text, bucketed (transform_features output)
PAD_ID = 0
OVERALL = "overall"      # metrics key: examples whose every labelled task is right
RESERVED = (TEXT, TOKENS, TOKEN_IDS, CHAR_IDS, LENGTH_BUCKET, OVERALL)

# Transform's vocabulary files.
TOKEN_VOCABULARY = "tokens"
CHAR_VOCABULARY = "chars"
# The tokens seen at least twice in training: a prefix of the token vocabulary (both are sorted by
# frequency), so its size tells the Trainer which ids are rare (for word dropout).
FREQUENT_TOKEN_VOCABULARY = "frequent_tokens"
