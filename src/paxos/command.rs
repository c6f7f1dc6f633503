//! What a node's user asks of the core (`Command`; parsing one from text is `commands.rs`),
//! and the rules a transfer must follow (`check_transfer`), written once for every place
//! that judges one: the core, the prompt, the ledger and the simulator.

use super::Refusal;
use crate::ledger::NodeId;

/// A command that the protocol core carries out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Transfer {
        debit: NodeId,
        credit: NodeId,
        amount: u64,
    },
    /// Short hashes, so a line fits 80 columns, unless `full`.
    PrintBlockchain {
        full: bool,
    },
    PrintBalance,
    PrintBalances,
    PrintQueue,
    /// Short hashes unless `full`, as for `PrintBlockchain`.
    Status {
        full: bool,
    },
    Crash,
    Sever(NodeId),
    Restore(NodeId),
    /// This node's Paxos state at the depth in play.
    State,
}

/// What a transfer is judged against. A rule whose fact is `None` is not judged: the ledger
/// judges a committed transfer of any origin, and the prompt judges one answer at a time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Judge {
    pub nodes: usize,
    /// The node that queues it, which may spend from its own account only.
    pub me: Option<NodeId>,
    /// What that account can still spend: its balance less its queue.
    pub available: Option<u64>,
    /// Whether the node is recovering lost records (see `Refusal::Recovering`).
    pub recovering: bool,
}

/// A transfer as asked for; a part not known yet (`None`) passes its rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request {
    pub debit: Option<NodeId>,
    pub credit: Option<NodeId>,
    pub amount: Option<u64>,
}

/// The transfer rules, in the order they are checked, one `Refusal` each.
pub fn check_transfer(judge: &Judge, t: &Request) -> Result<(), Refusal> {
    if judge.recovering {
        return Err(Refusal::Recovering);
    }
    let unknown = [t.debit, t.credit]
        .into_iter()
        .flatten()
        .filter(|&n| n >= judge.nodes)
        .max();
    if let Some(node) = unknown {
        let nodes = judge.nodes;
        return Err(Refusal::UnknownNode { node, nodes });
    }
    if let (Some(me), Some(debit)) = (judge.me, t.debit) {
        if debit != me {
            return Err(Refusal::NotOwnAccount { node: me });
        }
    }
    if t.debit.is_some() && t.debit == t.credit {
        return Err(Refusal::SameAccount);
    }
    if t.amount == Some(0) {
        return Err(Refusal::ZeroAmount);
    }
    if let (Some(requested), Some(available)) = (t.amount, judge.available) {
        if requested > available {
            return Err(Refusal::Overdraft {
                requested,
                available,
            });
        }
    }
    Ok(())
}

impl Request {
    pub fn transfer(debit: NodeId, credit: NodeId, amount: u64) -> Request {
        Request {
            debit: Some(debit),
            credit: Some(credit),
            amount: Some(amount),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_has_its_own_refusal_and_unknown_facts_pass() {
        let node = Judge {
            nodes: 3,
            me: Some(0),
            available: Some(40),
            recovering: false,
        };
        let check = |judge: &Judge, d, c, a| check_transfer(judge, &Request::transfer(d, c, a));
        assert_eq!(check(&node, 0, 1, 40), Ok(()));
        let recovering = Judge {
            recovering: true,
            ..node
        };
        assert_eq!(check(&recovering, 0, 1, 1), Err(Refusal::Recovering));
        let unknown = Err(Refusal::UnknownNode { node: 5, nodes: 3 });
        assert_eq!(check(&node, 4, 5, 1), unknown);
        assert_eq!(
            check(&node, 1, 2, 1),
            Err(Refusal::NotOwnAccount { node: 0 })
        );
        assert_eq!(check(&node, 0, 0, 1), Err(Refusal::SameAccount));
        assert_eq!(check(&node, 0, 1, 0), Err(Refusal::ZeroAmount));
        let overdraft = Refusal::Overdraft {
            requested: 41,
            available: 40,
        };
        assert_eq!(check(&node, 0, 1, 41), Err(overdraft));
        // The ledger judges any origin, and no balance: the arithmetic is its own.
        let ledger = Judge {
            nodes: 3,
            ..Judge::default()
        };
        assert_eq!(check(&ledger, 2, 1, 1_000), Ok(()));
        // The prompt judges one answer at a time.
        let debit = |d| Request {
            debit: Some(d),
            ..Request::default()
        };
        assert_eq!(check_transfer(&node, &debit(0)), Ok(()));
        assert_eq!(
            check_transfer(&node, &debit(2)),
            Err(Refusal::NotOwnAccount { node: 0 })
        );
    }
}
