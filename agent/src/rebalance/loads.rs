//! The planner's working copy of a node's figures: the same content as [`Figures`], in a fixed
//! array, so that predicting a placement on thousands of nodes allocates nothing.

use super::plan::Figures;
use crate::load::score::{Resource, ResourceLoad};

/// Utilisation and pressure per resource, in the order of [`Resource::ALL`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loads([ResourceLoad; 3]);

/// The position of `resource` in [`Resource::ALL`] (and in per-resource arrays).
pub fn index(resource: Resource) -> usize {
    match resource {
        Resource::Cpu => 0,
        Resource::Memory => 1,
        Resource::Network => 2,
    }
}

impl Loads {
    pub fn new(of: impl Fn(Resource) -> ResourceLoad) -> Self {
        Self(Resource::ALL.map(of))
    }

    pub fn get(&self, resource: Resource) -> &ResourceLoad {
        &self.0[index(resource)]
    }

    #[cfg(test)]
    pub fn from_figures(figures: &Figures) -> Self {
        Self::new(|r| figures.get(&r).cloned().unwrap_or_default())
    }

    pub fn to_figures(&self) -> Figures {
        Resource::ALL
            .iter()
            .map(|r| (*r, self.get(*r).clone()))
            .collect()
    }
}
