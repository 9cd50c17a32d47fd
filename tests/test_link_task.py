"""Link prediction: positive/negative pairs and their labels, ROC AUC."""
import math

import pytest
import torch
from torch_geometric.data import Data

from tgnn_transformers.train.recipes import (_pairs_with_negatives,
                                           link_recipe, roc_auc)


def _nearly_complete(num_nodes, missing):
    """Directed edges between all distinct nodes except ``missing``."""
    edges = [(i, j) for i in range(num_nodes) for j in range(num_nodes)
             if i != j and (i, j) not in missing]
    return torch.tensor(edges).t()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_follow_the_negatives_actually_sampled(seed):
    # 18 positives, but only 2 non-edges exist: negative_sampling returns
    # far fewer negatives than asked for.
    torch.manual_seed(seed)
    missing = {(0, 1), (2, 3)}
    edge_index = _nearly_complete(5, missing)
    pos = edge_index
    pairs, labels = _pairs_with_negatives(pos, edge_index, 5)
    num_neg = pairs.size(1) - pos.size(1)
    assert 0 < num_neg < pos.size(1)
    assert labels.shape == (pairs.size(1), )
    assert labels.dtype == torch.float
    assert torch.equal(pairs[:, :pos.size(1)], pos)
    assert bool((labels[:pos.size(1)] == 1).all())
    assert bool((labels[pos.size(1):] == 0).all())
    assert {tuple(p) for p in pairs[:, pos.size(1):].t().tolist()} <= missing


def test_enough_non_edges_give_as_many_negatives_as_positives():
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 3]])
    pairs, labels = _pairs_with_negatives(edge_index, edge_index, 50)
    assert pairs.shape == (2, 6)
    assert labels.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.filterwarnings("ignore:There are not enough negative edges")
def test_link_task_runs_on_a_nearly_complete_graph():
    """The training pairs of ``evaluate`` used to get 2 x (#negatives)
    labels for #positives + #negatives pairs: on a dense graph, where fewer
    negatives exist than positives, the AUC failed on the size mismatch."""
    from tgnn_transformers.train import resolve_config
    num_nodes = 8
    edge_index = _nearly_complete(num_nodes, {(0, 1), (1, 0)})
    data = Data(x=torch.randn(num_nodes, 4), edge_index=edge_index,
                num_nodes=num_nodes)
    config = resolve_config("link", "cora", "mha")  # 8 nodes: fast anyway
    task = link_recipe(data, config, seed=0)
    assert math.isfinite(task.train_epoch())
    result = task.evaluate()
    assert 0.0 <= result["train"] <= 1.0
    assert math.isfinite(result["val_loss"])


def _brute_force_auc(scores, labels):
    """P(score of a positive > score of a negative), ties counting 1/2,
    over every (positive, negative) pair."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
               for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_roc_auc_equals_pairwise_count_with_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 5 + 7 * seed
    # few distinct values: many ties, within and across the classes
    scores = torch.randint(0, 4, (n, ), generator=gen).float() / 3
    labels = torch.randint(0, 2, (n, ), generator=gen)
    labels[0], labels[1] = 0, 1  # both classes present
    expected = _brute_force_auc(scores.tolist(), labels.tolist())
    assert roc_auc(scores, labels) == pytest.approx(expected, abs=1e-12)
    # float labels (as the link task builds them) give the same
    assert roc_auc(scores, labels.float()) == pytest.approx(expected,
                                                            abs=1e-12)


def test_roc_auc_small_cases():
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0
    assert roc_auc(torch.tensor([0.9, 0.1]), torch.tensor([0, 1])) == 0.0
    assert roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == 0.5
    # ties across classes: 1 pair won, 1 tied, 0 lost of 2
    scores, labels = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1, 0, 0])
    assert roc_auc(scores, labels) == pytest.approx(0.75)
    assert math.isnan(roc_auc(torch.tensor([0.3, 0.4]),
                              torch.tensor([1, 1])))
