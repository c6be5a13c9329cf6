"""The task instruction of every bundled task, pinned here rather than read from the installed mteb.

The texts are the ones the E5-mistral authors published for their MTEB evaluation (``e5/utils.py`` of
microsoft/unilm, function ``get_task_def_by_task_name_and_type``): task-specific for retrieval, classification,
clustering, reranking and pair classification, one per type for STS and summarization. Tasks outside their list
(WikiQA, MSRP) get one written in the same style and marked as ours. A user's BEIR folder keeps the instruction
its own metadata carries (``instruction.txt``, else the retrieval default).
"""

from __future__ import annotations

from mteb.abstasks.task_metadata import TaskMetadata

STS = "Retrieve semantically similar text."
SUMMARIZATION = "Given a news summary, retrieve other semantically similar summaries"
SIMILAR_TWEETS = "Retrieve tweets that are semantically similar to the given tweet"

E5_INSTRUCTIONS: dict[str, str] = {
    # Retrieval
    "SciFact": "Given a scientific claim, retrieve documents that support or refute the claim",
    "NFCorpus": "Given a question, retrieve relevant documents that best answer the question",
    # STS
    **dict.fromkeys(("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICK-R", "BIOSSES"), STS),
    # Classification
    "Banking77Classification": "Given a online banking query, find the corresponding intents",
    "EmotionClassification": "Classify the emotion expressed in the given Twitter message into one of the six "
    "emotions: anger, fear, joy, love, sadness, and surprise",
    "AmazonCounterfactualClassification": "Classify a given Amazon customer review text as either counterfactual "
    "or not-counterfactual",
    "TweetSentimentExtractionClassification": "Classify the sentiment of a given tweet as either positive, "
    "negative, or neutral",
    # Clustering
    "RedditClustering": "Identify the topic or theme of Reddit posts based on the titles",
    "StackExchangeClustering": "Identify the topic or theme of StackExchange posts based on the titles",
    # Pair classification
    "TwitterURLCorpus": SIMILAR_TWEETS,
    # Summarization
    "SummEval": SUMMARIZATION,
}
# Not in MTEB, so not in the E5 list: ours, in its style (the tasks' metadata carries no prompt of its own).
OUR_INSTRUCTIONS: dict[str, str] = {
    "WikiQA": "Given a question, retrieve the Wikipedia sentences that answer the question",
    "MSRP": "Retrieve sentences that are paraphrases of the given news sentence",
}
INSTRUCTIONS = {**E5_INSTRUCTIONS, **OUR_INSTRUCTIONS}


def task_instruction(metadata: TaskMetadata) -> str:
    """The instruction for the query side (or, in symmetric tasks, every text) of a task; "" for none."""
    if metadata.name in INSTRUCTIONS:
        return INSTRUCTIONS[metadata.name]
    prompt = metadata.prompt
    return (prompt.get("query", "") if isinstance(prompt, dict) else prompt) or ""
